//===- GemmVnni.cpp - the W8A8 microkernel with AVX-512 VNNI --------------===//
//
// Compiled with -mavx512vnni (runtime/CMakeLists.txt) and called only when
// the CPU has it (hasVnni). A tile is R rows x 2 panels: per group of 4 k it
// loads two 64-byte weight vectors (16 columns x 4 k each) and, per row,
// broadcasts 4 uint8 activations and issues two vpdpbusd. The epilogue
// removes the + 128 of the activations with the column sums and scales by
// the row and column scales. W4A8's tile (GemmInt4Dot.cpp) is here too.
//
//===----------------------------------------------------------------------===//

#include "DotTiles.h"
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

namespace {
/// W4A8 (GemmInt4Dot.cpp): R rows x P panels; per 8 k, one 64-byte load
/// per panel gives both nibble planes (16 columns x 4 k each), and per row
/// two 4-byte broadcasts of signed activations and two vpdpbusd per panel.
/// Per group the integer sums are corrected, converted and scaled into f32
/// accumulators, in group order. With few rows (decode) each plane has its
/// own integer accumulator (added exactly at the group's end), so that
/// vpdpbusd's latency does not bound a one-row product, and the weights
/// are prefetched a little ahead, one stream per panel.
template <int R, int P>
inline void tileI4(const int8_t *xq, int64_t ldq, const float *xs,
                   const int32_t *corr, const I4DotLayout &l, int64_t p0,
                   const float *bias, int nvalid, float *c, int64_t ldc) {
  constexpr int A = R <= 2 ? 2 : 1; // integer accumulators per (row, panel)
  constexpr int64_t kAhead = 1024;  // prefetch distance, bytes
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512 facc[R][P];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      facc[r][p] = _mm512_setzero_ps();
  const uint8_t *base = l.base + p0 * l.panelBytes;
  for (int64_t g = 0; g < l.groups; ++g) {
    __m512i iacc[R][P][A];
    for (int r = 0; r < R; ++r)
      for (int p = 0; p < P; ++p)
        for (int a = 0; a < A; ++a)
          iacc[r][p][a] = _mm512_setzero_si512();
    for (int64_t k0 = g * l.group; k0 < (g + 1) * l.group; k0 += 8) {
      __m512i lo[P], hi[P];
      for (int p = 0; p < P; ++p) {
        const uint8_t *at = base + p * l.panelBytes + k0 * (kPanel / 2);
        if constexpr (R == 1)
          _mm_prefetch(reinterpret_cast<const char *>(at + kAhead),
                       _MM_HINT_T0);
        __m512i v = _mm512_loadu_si512(at);
        lo[p] = _mm512_and_si512(v, low);
        hi[p] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        int32_t four[2];
        std::memcpy(four, xq + r * ldq + k0, 8);
        const __m512i a0 = _mm512_set1_epi32(four[0]),
                      a1 = _mm512_set1_epi32(four[1]);
        for (int p = 0; p < P; ++p) {
          iacc[r][p][0] = _mm512_dpbusd_epi32(iacc[r][p][0], lo[p], a0);
          iacc[r][p][A - 1] = _mm512_dpbusd_epi32(iacc[r][p][A - 1], hi[p], a1);
        }
      }
    }
    for (int p = 0; p < P; ++p) {
      const __m512 scale =
          _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(
              l.scales + ((p0 + p) * l.groups + g) * kPanel)));
      for (int r = 0; r < R; ++r) {
        __m512i sum = iacc[r][p][0];
        if constexpr (A == 2)
          sum = _mm512_add_epi32(sum, iacc[r][p][1]);
        __m512 v = _mm512_cvtepi32_ps(
            _mm512_sub_epi32(sum, _mm512_set1_epi32(corr[r * l.groups + g])));
        facc[r][p] = _mm512_fmadd_ps(v, scale, facc[r][p]);
      }
    }
  }
  for (int p = 0; p < P; ++p) {
    const int cols = std::min<int>(kPanel, nvalid - p * kPanel);
    if (cols <= 0)
      continue;
    const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
    const __m512 add =
        bias ? _mm512_loadu_ps(bias + p * kPanel) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(
          c + r * ldc + p * kPanel, mask,
          _mm512_fmadd_ps(facc[r][p], _mm512_set1_ps(xs[r]), add));
  }
}
} // namespace

void gemmI4Dot(const int8_t *xq, int64_t ldq, const float *xs,
               const int32_t *corr, int64_t m, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, int64_t panelBegin,
               int64_t panelEnd) {
  constexpr int MR4 = 4, NP1 = 4; // one row: 4 panels (weight streams)
  const I4DotLayout l(w);
  const int np = m == 1 ? NP1 : NP;
  float biasBuf[NP1 * kPanel];
  for (int64_t p0 = panelBegin; p0 < panelEnd; p0 += np) {
    const int64_t have = std::min<int64_t>(np, panelEnd - p0);
    const int nvalid =
        static_cast<int>(std::min<int64_t>(have * kPanel, w.n - p0 * kPanel));
    const float *b = biasTile(bias, p0 * kPanel, nvalid,
                              static_cast<int>(have * kPanel), biasBuf);
    for (int64_t r = 0; r < m; r += MR4) {
      auto run = [&](auto rc, auto pc) {
        tileI4<decltype(rc)::value, decltype(pc)::value>(
            xq + r * ldq, ldq, xs + r, corr + r * l.groups, l, p0, b, nvalid,
            c + r * ldc + p0 * kPanel, ldc);
      };
      withRowCount<MR4>(std::min<int64_t>(MR4, m - r), [&](auto rc) {
        if constexpr (decltype(rc)::value == 1) {
          withRowCount<NP1>(have, [&](auto pc) { run(rc, pc); });
        } else {
          if (have == NP)
            run(rc, std::integral_constant<int, NP>());
          else
            run(rc, std::integral_constant<int, 1>());
        }
      });
    }
  }
}

} // namespace ds::rt::kernels::vnni
