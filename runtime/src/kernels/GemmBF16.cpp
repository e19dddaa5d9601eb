//===- GemmBF16.cpp - bf16 x bf16 GEMM with AVX512_BF16's vdpbf16ps -------===//
//
// Compiled with -mavx512bf16 (runtime/CMakeLists.txt) and called only when
// the CPU has it (hasBF16Dot). The weights are the ordinary BF16 panels
// ([panel][k][16] bf16): the rows k and k + 1 of a panel are 64 contiguous
// bytes, which one vpermw interleaves into the (k, k + 1) pairs vdpbf16ps
// multiplies. The activations come as bf16 pairs, one 32-bit word per
// (k, k + 1), broadcast per row. A tile is R rows x P panels with every
// accumulator in a register over the whole K, started from the bias: each
// output is bias, then per pair j the odd product then the even one, each
// added exactly (a bf16 x bf16 product is exact in f32, so vdpbf16ps
// rounds once per product as an FMA would) -- the same sequence for every
// row, whatever the tile, the row count or the thread split.
//
//===----------------------------------------------------------------------===//

#include "DotTiles.h"
#include "ds/rt/Kernels.h"

#include <algorithm>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

namespace ds::rt::kernels::bf16dot {
namespace {
/// Rows k (words 0..15) and k + 1 (words 16..31) of a panel into pairs:
/// word 2i = column i of row k, word 2i + 1 = column i of row k + 1.
inline __m512i interleaveIndex() {
  alignas(64) static const uint16_t index[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_load_si512(index);
}

template <int R, int P>
inline void tile(const uint32_t *xp, int64_t ldq, const uint16_t *panel,
                 int64_t panelStride, int64_t k, const float *bias, int nvalid,
                 float *c, int64_t ldc) {
  const __m512i perm = interleaveIndex();
  __m512 acc[R][P];
  for (int p = 0; p < P; ++p) {
    __m512 b = bias ? _mm512_loadu_ps(bias + p * kPanel) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r)
      acc[r][p] = b;
  }
  const int64_t pairs = k / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    __m512bh w[P];
    for (int p = 0; p < P; ++p)
      w[p] = (__m512bh)_mm512_permutexvar_epi16(
          perm, _mm512_loadu_si512(panel + p * panelStride + j * 2 * kPanel));
    for (int r = 0; r < R; ++r) {
      __m512bh x =
          (__m512bh)_mm512_set1_epi32(static_cast<int32_t>(xp[r * ldq + j]));
      for (int p = 0; p < P; ++p)
        acc[r][p] = _mm512_dpbf16_ps(acc[r][p], x, w[p]);
    }
  }
  if (k & 1) {
    // The last row alone: the odd half of every pair is zero (weights
    // loaded masked, so nothing past the panel is read; activations
    // padded with zero).
    __m512bh w[P];
    for (int p = 0; p < P; ++p)
      w[p] = (__m512bh)_mm512_permutexvar_epi16(
          perm, _mm512_maskz_loadu_epi16(0xffff, panel + p * panelStride +
                                                     pairs * 2 * kPanel));
    for (int r = 0; r < R; ++r) {
      __m512bh x = (__m512bh)_mm512_set1_epi32(
          static_cast<int32_t>(xp[r * ldq + pairs]));
      for (int p = 0; p < P; ++p)
        acc[r][p] = _mm512_dpbf16_ps(acc[r][p], x, w[p]);
    }
  }
  for (int p = 0; p < P; ++p) {
    int cols = std::min<int>(kPanel, nvalid - p * kPanel);
    if (cols <= 0)
      continue;
    __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(c + r * ldc + p * kPanel, mask, acc[r][p]);
  }
}

/// Tiles of up to 12 rows x 2 panels (24 accumulators, 2 weight vectors,
/// one broadcast); up to 4 rows take 4 panels at a time (more weight
/// streams in flight for the memory-bound small-batch case).
template <int P>
void panels(const uint32_t *xp, int64_t ldq, int64_t m, const uint16_t *panel,
            int64_t panelStride, int64_t k, const float *bias, int nvalid,
            float *c, int64_t ldc) {
  constexpr int MR = P == 4 ? 4 : 12;
  const int64_t tiles = (m + MR - 1) / MR, per = (m + tiles - 1) / tiles;
  for (int64_t r = 0; r < m; r += per) {
    const int64_t rows = std::min<int64_t>(per, m - r);
    withRowCount<MR>(rows, [&](auto rc) {
      constexpr int R = decltype(rc)::value;
      tile<R, P>(xp + r * ldq, ldq, panel, panelStride, k, bias, nvalid,
                 c + r * ldc, ldc);
    });
  }
}
} // namespace

void gemmPanels(const uint32_t *xp, int64_t ldq, int64_t m,
                const PackedWeight &w, const float *bias, float *c, int64_t ldc,
                int64_t panelBegin, int64_t panelEnd) {
  const auto *base = static_cast<const uint16_t *>(w.data);
  const int64_t panelStride = w.k * kPanel;
  const int step = m <= 4 ? 4 : 2;
  float biasBuf[4 * kPanel];
  for (int64_t p0 = panelBegin; p0 < panelEnd; p0 += step) {
    const int64_t have = std::min<int64_t>(step, panelEnd - p0);
    const int nvalid =
        static_cast<int>(std::min<int64_t>(have * kPanel, w.n - p0 * kPanel));
    const float *b = biasTile(bias, p0 * kPanel, nvalid,
                              static_cast<int>(have * kPanel), biasBuf);
    const uint16_t *panel = base + p0 * panelStride;
    float *cc = c + p0 * kPanel;
    // Panels left over take the narrower tiles; a row's arithmetic is the
    // same in each.
    if (have == 4)
      panels<4>(xp, ldq, m, panel, panelStride, w.k, b, nvalid, cc, ldc);
    else if (have >= 2) {
      panels<2>(xp, ldq, m, panel, panelStride, w.k, b, nvalid, cc, ldc);
      if (have == 3)
        panels<1>(xp, ldq, m, panel + 2 * panelStride, panelStride, w.k,
                  b ? b + 2 * kPanel : nullptr, nvalid - 2 * kPanel,
                  cc + 2 * kPanel, ldc);
    } else
      panels<1>(xp, ldq, m, panel, panelStride, w.k, b, nvalid, cc, ldc);
  }
}

} // namespace ds::rt::kernels::bf16dot
