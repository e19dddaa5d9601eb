//===- GemmInt4Dot.cpp - W4A8: int8 activations times int4 weights --------===//
//
// The GEMM of #ds.act_quant<i8, group = 0> inputs and int4 weights with K
// group scales (ds-quantize w4a8; llama.cpp's Q4_0 x Q8_0 with one
// activation scale per row): activation rows are quantized as W8A8's are
// (quantizeRowsI8), then taken as signed bytes; the weights are stored + 8
// as nibbles, the unsigned operand of vpdpbusd (AVX-512 VNNI), and the + 8
// is taken back per group with the row's activation sum over the group.
// Per output, in this order: for each group, the exact integer sum, minus
// 8 x the activation sum, converted to f32 and multiplied by the group's
// scale in one FMA into the accumulator; then the accumulator times the
// row's scale plus the bias, one FMA. The AVX2 kernel computes the same
// integers (vpmaddubsw then vpmaddwd: no saturation for nibbles) and the
// same FMAs, so both give the same bits.
//
//===----------------------------------------------------------------------===//

#include "DotTiles.h"
#include "I8DotLayout.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"
#include "ds/support/DType.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

namespace ds::rt::kernels {
namespace vnni {
void gemmI4Dot(const int8_t *xq, int64_t ldq, const float *xs,
               const int32_t *corr, int64_t m, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, int64_t panelBegin,
               int64_t panelEnd);
} // namespace vnni

void packWeightI4Dot(const float *q, const float *scales, int64_t n, int64_t k,
                     int64_t group, void *out) {
  assert(group > 0 && group % 8 == 0 && k % group == 0);
  PackedWeight w{WeightFormat::I4Dot, n, k, out, group};
  const I4DotLayout l(w);
  auto *dst = static_cast<uint8_t *>(out);
  // Column c's value at k (+ 8), 8 (zero) past the weight.
  auto nibble = [&](int64_t col, int64_t kk) -> uint8_t {
    if (col >= n || kk >= k)
      return 8;
    return static_cast<uint8_t>(static_cast<int>(q[col * k + kk]) + 8) & 0xf;
  };
  for (int64_t p = 0; p < l.panels; ++p)
    for (int64_t k0 = 0; k0 < l.paddedK(); k0 += 8)
      for (int64_t c = 0; c < kPanel; ++c)
        for (int64_t i = 0; i < 4; ++i) {
          const int64_t col = p * kPanel + c;
          *dst++ = static_cast<uint8_t>(nibble(col, k0 + i) |
                                        nibble(col, k0 + 4 + i) << 4);
        }
  auto *s = reinterpret_cast<uint16_t *>(dst);
  for (int64_t p = 0; p < l.panels; ++p)
    for (int64_t g = 0; g < l.groups; ++g)
      for (int64_t c = 0; c < kPanel; ++c) {
        const int64_t col = p * kPanel + c;
        *s++ = ::ds::floatToHalf(col < n ? scales[col * l.groups + g] : 0.0f);
      }
}

namespace {
/// R rows x one panel with AVX2: per 8 k, two 32-byte weight loads (8
/// columns x 4 k each, both nibble planes) unpacked once for every row;
/// vpmaddubsw (unsigned nibbles x signed activations: pairs at most 3840)
/// then vpmaddwd with ones give vpdpbusd's sums of 4.
template <int R>
inline void tileAvx2(const int8_t *xq, int64_t ldq, const float *xs,
                     const int32_t *corr, const I4DotLayout &l, int64_t panel,
                     const float *bias, int nvalid, float *c, int64_t ldc) {
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  const uint8_t *w = l.base + panel * l.panelBytes;
  const uint16_t *sc = l.scales + panel * l.groups * kPanel;
  __m256 facc[R][2];
  for (int r = 0; r < R; ++r)
    facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < l.groups; ++g) {
    __m256i iacc[R][2];
    for (int r = 0; r < R; ++r)
      iacc[r][0] = iacc[r][1] = _mm256_setzero_si256();
    for (int64_t k0 = g * l.group; k0 < (g + 1) * l.group; k0 += 8) {
      const uint8_t *at = w + k0 * (kPanel / 2);
      __m256i lo[2], hi[2];
      for (int h = 0; h < 2; ++h) {
        __m256i v =
            _mm256_loadu_si256(reinterpret_cast<const __m256i *>(at + 32 * h));
        lo[h] = _mm256_and_si256(v, low);
        hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        int32_t four[2];
        std::memcpy(four, xq + r * ldq + k0, 8);
        const __m256i a0 = _mm256_set1_epi32(four[0]),
                      a1 = _mm256_set1_epi32(four[1]);
        for (int h = 0; h < 2; ++h) {
          __m256i s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo[h], a0), ones);
          __m256i s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi[h], a1), ones);
          iacc[r][h] = _mm256_add_epi32(iacc[r][h], _mm256_add_epi32(s0, s1));
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(
          reinterpret_cast<const __m128i *>(sc + g * kPanel + 8 * h)));
      for (int r = 0; r < R; ++r) {
        __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(
            iacc[r][h], _mm256_set1_epi32(corr[r * l.groups + g])));
        facc[r][h] = _mm256_fmadd_ps(v, scale, facc[r][h]);
      }
    }
  }
  for (int h = 0; h < 2; ++h) {
    const int cols = std::min(8, nvalid - 8 * h);
    if (cols <= 0)
      continue;
    const __m256 add =
        bias ? _mm256_loadu_ps(bias + 8 * h) : _mm256_setzero_ps();
    for (int r = 0; r < R; ++r) {
      __m256 out = _mm256_fmadd_ps(facc[r][h], _mm256_set1_ps(xs[r]), add);
      float tmp[8];
      _mm256_storeu_ps(tmp, out);
      std::copy(tmp, tmp + cols, c + r * ldc + 8 * h);
    }
  }
}

void gemmI4DotAvx2(const int8_t *xq, int64_t ldq, const float *xs,
                   const int32_t *corr, int64_t m, const PackedWeight &w,
                   const float *bias, float *c, int64_t ldc, int64_t panelBegin,
                   int64_t panelEnd) {
  constexpr int MR = 4;
  const I4DotLayout l(w);
  float biasBuf[kPanel];
  for (int64_t p = panelBegin; p < panelEnd; ++p) {
    const int nvalid =
        static_cast<int>(std::min<int64_t>(kPanel, w.n - p * kPanel));
    const float *b = biasTile(bias, p * kPanel, nvalid, kPanel, biasBuf);
    for (int64_t r = 0; r < m; r += MR) {
      withRowCount<MR>(std::min<int64_t>(MR, m - r), [&](auto rc) {
        tileAvx2<decltype(rc)::value>(xq + r * ldq, ldq, xs + r,
                                      corr + r * l.groups, l, p, b, nvalid,
                                      c + r * ldc + p * kPanel, ldc);
      });
    }
  }
}
} // namespace

uint64_t gemmI4DotScratchBytes(int64_t m, int64_t k, int64_t group) {
  const uint64_t um = static_cast<uint64_t>(m), uk = static_cast<uint64_t>(k);
  return scratchRound(um * uk) + scratchRound(4 * um) +
         scratchRound(4 * um * ((uk + group - 1) / group));
}

void gemmI4Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, ThreadPool *pool) {
  const I4DotLayout l(w);
  const int64_t ldq = l.paddedK();
  // Taken as gemmI4DotScratchBytes counts them.
  ThreadScratch::Scope scope;
  uint8_t *xq = scope.array<uint8_t>(m * ldq);
  float *xs = scope.array<float>(m);
  int32_t *corr = scope.array<int32_t>(m * l.groups);
  quantizeRowsI8(a, m, w.k, lda, w.inputScale, xq, ldq, xs);
  // Stored + 128: flipping the top bit gives the signed bytes; per row and
  // group, 8 x their sum takes back the weights' + 8.
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < l.groups; ++g) {
      int32_t sum = 0;
      uint8_t *at = xq + r * ldq + g * l.group;
      for (int64_t i = 0; i < l.group; ++i) {
        at[i] ^= 0x80;
        sum += static_cast<int8_t>(at[i]);
      }
      corr[r * l.groups + g] = 8 * sum;
    }
  const auto *xs8 = reinterpret_cast<const int8_t *>(xq);
  const bool vnni = hasVnni();
  // Pairs of panels: the VNNI kernel takes panels in pairs.
  splitPanels(w, m, 2, false, pool, [&](int64_t p0, int64_t p1) {
    if (vnni)
      vnni::gemmI4Dot(xs8, ldq, xs, corr, m, w, bias, c, ldc, p0, p1);
    else
      gemmI4DotAvx2(xs8, ldq, xs, corr, m, w, bias, c, ldc, p0, p1);
  });
}

} // namespace ds::rt::kernels
