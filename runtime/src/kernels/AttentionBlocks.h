//===- AttentionBlocks.h - attention's inner loops, per ISA -----*- C++ -*-===//
//
// The two loops attention spends its time in, for the AVX-512 build
// (AttentionAvx512.cpp); Attention.cpp has the AVX2 ones and calls these
// when the CPU has AVX-512. Both builds do the same FMAs in the same order
// for every (head, key) and (head, column), so attention's results are bit
// for bit the same on either path (AttentionTest checks it):
//  - a score is dot(): 8 lane partial sums over the elements (lane i takes
//    elements i, i + 8, ...), the rest added to lanes 0, 1, ..., then the
//    lanes summed pairwise (i + 4, i + 2, i + 1). A 512-bit register holds
//    the 8 lanes of two heads side by side.
//  - a weighted sum is one FMA chain per column over the keys in order; a
//    512-bit register holds 16 columns.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_ATTENTIONBLOCKS_H
#define DS_RT_KERNELS_ATTENTIONBLOCKS_H

#include "ds/rt/Kernels.h"

#include <cstdint>

namespace ds::rt::kernels::avx512 {

/// Floats packQueries4 writes for queries of n elements.
inline int64_t packedQueriesSize(int64_t n) { return 4 * (n / 8 * 8); }

/// The 4 queries a[0..3] interleaved for dotRows4: per pair of heads, per 8
/// elements, the 8 of the first head then the 8 of the second.
void packQueries4(const float *const *a, int64_t n, float *q);

/// s[i * ld + j] = dot(a[i], b + j * stride, n) for the 4 heads i < 4 that
/// share the rows at b, rows j in [j0, j1); q is packQueries4(a).
void dotRows4(const float *q, const float *const *a, const float *b,
              int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
              int64_t ld);

/// dotRows4 for 8 heads i < 8 that share the rows at b; q is
/// packQueries4(a) followed by packQueries4(a + 4).
void dotRows8(const float *q, const float *const *a, const float *b,
              int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
              int64_t ld);

/// out[i * ldo + c] += Σ_{j in [j0, j1)} p[i * ldp + j] * rows[i][j *
/// stride + c] for the 4 heads i < 4 and columns c in [c0, c0 + 64): every
/// column one FMA chain over j in order. `shared`: the 4 heads read the same
/// rows (rows[0]).
void weightedSums4x64(const float *p, int64_t ldp, const float *const *rows,
                      bool shared, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo);

/// The same over the rows of a bf16 / f16 / e4m3 cache (`type`; `scale`
/// is an e4m3 cache's), widened in registers: exactly dotRows4 over an f32
/// copy of them.
void dotRows4(const float *q, const float *const *a, const void *b, KVType type,
              float scale, int64_t stride, int64_t n, int64_t j0, int64_t j1,
              float *s, int64_t ld);

/// weightedSums4x64 of 4 heads sharing the rows at `row` of a bf16 / f16 /
/// e4m3 cache (`type`, `scale`), widened in registers: exactly the f32 loop
/// over an f32 copy of them.
void weightedSums4x64(const float *p, int64_t ldp, const void *row, KVType type,
                      float scale, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo);

/// softmaxWeights (Attention.cpp) 16 scores at a time with the same
/// result: scores[j] = float(scores[j] * scale) (in double; none when scale
/// is 1), then expApprox(scores[j] - max) and their sum in double, lane i
/// of 8 taking j = i mod 8, the lanes added pairwise.
double softmaxWeights(float *scores, int64_t n, double scale);

/// dst[c] = the f32 value of element c of a bf16 (`bf16`) or f16 row, c <
/// n: exact, 16 at a time (a narrow KV cache's rows widened per block).
void widenRow(const uint16_t *src, bool bf16, int64_t n, float *dst);

/// dst[c] = e4m3 element c of src times `scale` (a power of two), exactly,
/// 16 at a time; 0x7f / 0xff give NaN.
void widenRowE4M3(const uint8_t *src, int64_t n, float scale, float *dst);

} // namespace ds::rt::kernels::avx512

#endif // DS_RT_KERNELS_ATTENTIONBLOCKS_H
