//===- GemmVnni.cpp - the W8A8 microkernel with AVX-512 VNNI --------------===//
//
// Compiled with -mavx512vnni (runtime/CMakeLists.txt) and called only when
// the CPU has it (hasVnni). A tile is R rows x 2 panels: per group of 4 k it
// loads two 64-byte weight vectors (16 columns x 4 k each) and, per row,
// broadcasts 4 uint8 activations and issues two vpdpbusd. The epilogue
// removes the + 128 of the activations with the column sums and scales by
// the row and column scales.
//
//===----------------------------------------------------------------------===//

#include "I8DotLayout.h"
#include "ds/rt/Kernels.h"

#include <algorithm>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

namespace ds::rt::kernels::vnni {
namespace {
constexpr int MR = 12, NP = 2;

template <int R, int P>
inline void tile(const uint8_t *xq, int64_t ldq, const float *xs,
                 const int8_t *panel, int64_t panelBytes, int64_t quads,
                 const float *scales, const int32_t *sums, const float *bias,
                 int nvalid, float *c, int64_t ldc) {
  __m512i acc[R][P];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      acc[r][p] = _mm512_setzero_si512();
  for (int64_t g = 0; g < quads; ++g) {
    __m512i w[P];
    for (int p = 0; p < P; ++p)
      w[p] = _mm512_loadu_si512(panel + p * panelBytes + g * 64);
    for (int r = 0; r < R; ++r) {
      int32_t four;
      std::memcpy(&four, xq + r * ldq + g * 4, 4);
      __m512i b = _mm512_set1_epi32(four);
      for (int p = 0; p < P; ++p)
        acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], b, w[p]);
    }
  }
  for (int p = 0; p < P; ++p) {
    __m512 scale = _mm512_loadu_ps(scales + p * kPanel);
    __m512i shift = _mm512_slli_epi32(_mm512_loadu_si512(sums + p * kPanel), 7);
    __m512 add =
        bias ? _mm512_loadu_ps(bias + p * kPanel) : _mm512_setzero_ps();
    int cols = std::min<int>(kPanel, nvalid - p * kPanel);
    if (cols <= 0)
      continue;
    __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    for (int r = 0; r < R; ++r) {
      __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][p], shift));
      v = _mm512_fmadd_ps(v, _mm512_mul_ps(scale, _mm512_set1_ps(xs[r])), add);
      _mm512_mask_storeu_ps(c + r * ldc + p * kPanel, mask, v);
    }
  }
}
} // namespace

void gemmI8Dot(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
               const PackedWeight &w, const float *bias, float *c, int64_t ldc,
               int64_t panelBegin, int64_t panelEnd) {
  const I8DotLayout l(w);
  const int64_t quads = l.quads, panelBytes = l.panelBytes;
  float biasBuf[NP * kPanel];
  for (int64_t p0 = panelBegin; p0 < panelEnd; p0 += NP) {
    int64_t have = std::min<int64_t>(NP, panelEnd - p0);
    int nvalid =
        static_cast<int>(std::min<int64_t>(have * kPanel, w.n - p0 * kPanel));
    const float *b = biasTile(bias, p0 * kPanel, nvalid, NP * kPanel, biasBuf);
    const int8_t *panel = l.base + p0 * panelBytes;
    const float *sc = l.scales + p0 * kPanel;
    const int32_t *su = l.sums + p0 * kPanel;
    float *cc = c + p0 * kPanel;
    int64_t tiles = (m + MR - 1) / MR, per = (m + tiles - 1) / tiles;
    for (int64_t r = 0; r < m; r += per) {
      int64_t rows = std::min<int64_t>(per, m - r);
      auto run = [&](auto rc, auto pc) {
        constexpr int R = decltype(rc)::value, P = decltype(pc)::value;
        tile<R, P>(xq + r * ldq, ldq, xs + r, panel, panelBytes, quads, sc, su,
                   b, nvalid, cc + r * ldc, ldc);
      };
      auto dispatch = [&](auto pc) {
        withRowCount<MR>(rows, [&](auto rc) { run(rc, pc); });
      };
      if (have == NP)
        dispatch(std::integral_constant<int, NP>());
      else
        dispatch(std::integral_constant<int, 1>());
    }
  }
}

} // namespace ds::rt::kernels::vnni
