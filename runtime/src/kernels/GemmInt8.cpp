//===- GemmInt8.cpp - W8A8: int8 activations times int8 weights ----------===//
//
// The GEMM of #ds.act_quant<i8, group = 0> inputs and int8 per-row weights:
// activation rows are quantized here (as support's ds::quantize does) and
// stored + 128 as uint8, so that AVX-512 VNNI's vpdpbusd (uint8 x int8)
// computes the dot products; the + 128 is taken back with the weights'
// column sums. Without VNNI an AVX2 kernel computes the same integers.
//
//===----------------------------------------------------------------------===//

#include "AmxTiles.h"
#include "DotTiles.h"
#include "I8DotLayout.h"
#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <immintrin.h>
#include <type_traits>
#include <vector>

namespace ds::rt::kernels {
namespace vnni {
void gemmI8Dot(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
               const PackedWeight &w, const float *bias, float *c, int64_t ldc,
               int64_t panelBegin, int64_t panelEnd);
} // namespace vnni

bool hasVnni() {
  static const bool has = hasAvx512() && cpuInfo().avx512vnni;
  return has;
}

namespace {
int64_t panelsOf(int64_t n) { return (n + kPanel - 1) / kPanel; }
int64_t quadsOf(int64_t k) { return (k + 3) / 4; }

/// Row stride of the quantized activations: whole tile chunks when the
/// tile kernels may run.
int64_t rowBytes(int64_t k) {
  return amxMode() != AmxMode::Off ? amx::i8RowBytes(k) : quadsOf(k) * 4;
}

/// From this many rows the CPU's tiles take a W8A8 GEMM (the integer sums,
/// and so the bits, are the same on every path; a chosen, not measured,
/// threshold: no AMX host was at hand). Emulated tiles take every call,
/// so that tests see every shape.
constexpr int64_t kAmxMinRows = 16;
} // namespace

void packWeightI8Dot(const int8_t *q, const float *scales, int64_t n, int64_t k,
                     void *out) {
  int64_t panels = panelsOf(n), quads = quadsOf(k);
  auto *dst = static_cast<int8_t *>(out);
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t g = 0; g < quads; ++g)
      for (int64_t j = 0; j < kPanel; ++j)
        for (int64_t i = 0; i < 4; ++i) {
          int64_t row = p * kPanel + j, kk = g * 4 + i;
          *dst++ = row < n && kk < k ? q[row * k + kk] : 0;
        }
  auto *s = reinterpret_cast<float *>(dst);
  for (int64_t j = 0; j < panels * kPanel; ++j)
    s[j] = j < n ? scales[j] : 0.0f;
  auto *sums = reinterpret_cast<int32_t *>(s + panels * kPanel);
  for (int64_t j = 0; j < panels * kPanel; ++j) {
    int32_t sum = 0;
    for (int64_t kk = 0; j < n && kk < k; ++kk)
      sum += q[j * k + kk];
    sums[j] = sum;
  }
}

void quantizeRowsI8(const float *x, int64_t m, int64_t k, int64_t lda,
                    float staticScale, uint8_t *q, int64_t ldq, float *scales) {
  for (int64_t r = 0; r < m; ++r) {
    const float *row = x + r * lda;
    float scale = staticScale;
    if (!(scale > 0.0f)) {
      float lo = 0.0f, hi = 0.0f;
      for (int64_t i = 0; i < k; ++i) {
        lo = std::min(lo, row[i]);
        hi = std::max(hi, row[i]);
      }
      scale = std::max(-lo, hi) / 127.0f;
    }
    if (!(scale > 0.0f) || !std::isfinite(scale))
      scale = 1.0f;
    scales[r] = scale;
    uint8_t *out = q + r * ldq;
    for (int64_t i = 0; i < k; ++i) {
      float v = row[i] / scale;
      v = std::isnan(v) ? 0.0f : std::clamp(std::nearbyint(v), -128.0f, 127.0f);
      out[i] = static_cast<uint8_t>(static_cast<int>(v) + 128);
    }
    std::fill(out + k, out + ldq, uint8_t{128});
  }
}

namespace {
/// The same integers with AVX2, whose byte multiply (vpmaddubsw) saturates:
/// activations and weights widen to int16 and vpmaddwd adds exact products
/// of adjacent k pairs into 32-bit lanes. A tile is R rows x one panel: per
/// group of 4 k, four 16-byte weight loads (4 columns x 4 k each) widen
/// once and serve every row, whose 4 activations are one 64-bit broadcast.
/// Each column's two pair sums are added in the epilogue, which is the
/// VNNI kernel's (the same floats).
constexpr int kPrefetch = 1024;

template <int R, int P>
inline void tileAvx2(const int16_t *x16, int64_t ld16, const float *xs,
                     const int8_t *panel, int64_t panelBytes, int64_t quads,
                     const float *scales, const int32_t *sums,
                     const float *bias, int nvalid, float *c, int64_t ldc) {
  __m256i acc[R][P][4];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 4; ++v)
        acc[r][p][v] = _mm256_setzero_si256();
  for (int64_t g = 0; g < quads; ++g) {
    __m256i a[R];
    for (int r = 0; r < R; ++r) {
      int64_t four;
      std::memcpy(&four, x16 + r * ld16 + g * 4, 8);
      a[r] = _mm256_set1_epi64x(four);
    }
    if constexpr (R == 1)
      for (int p = 0; p < P; ++p)
        _mm_prefetch(reinterpret_cast<const char *>(panel + p * panelBytes +
                                                    g * 64 + kPrefetch),
                     _MM_HINT_T0);
    for (int p = 0; p < P; ++p)
      for (int v = 0; v < 4; ++v) {
        __m256i wv = _mm256_cvtepi8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i *>(
                panel + p * panelBytes + g * 64 + v * 16)));
        for (int r = 0; r < R; ++r)
          acc[r][p][v] =
              _mm256_add_epi32(acc[r][p][v], _mm256_madd_epi16(wv, a[r]));
      }
  }
  // acc[r][p][v] lanes: the pair sums (k 0+1, k 2+3) of columns 4v .. 4v+3
  // of panel p; hadd leaves [4v, 4v+1, 4v', 4v'+1 | 4v+2, 4v+3, 4v'+2,
  // 4v'+3] for v' = v + 1, put in order by a 64-bit permute.
  for (int p = 0; p < P; ++p)
    for (int half = 0; half < 2; ++half) {
      int at = p * kPanel + half * 8;
      int cols = std::min(8, nvalid - at);
      if (cols <= 0)
        continue;
      __m256 scale = _mm256_loadu_ps(scales + at);
      __m256i shift = _mm256_slli_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sums + at)), 7);
      __m256 add = bias ? _mm256_loadu_ps(bias + at) : _mm256_setzero_ps();
      for (int r = 0; r < R; ++r) {
        __m256i sum = _mm256_permute4x64_epi64(
            _mm256_hadd_epi32(acc[r][p][2 * half], acc[r][p][2 * half + 1]),
            0b11011000);
        __m256 out = _mm256_cvtepi32_ps(_mm256_sub_epi32(sum, shift));
        out = _mm256_fmadd_ps(out, _mm256_mul_ps(scale, _mm256_set1_ps(xs[r])),
                              add);
        if (cols == 8) {
          _mm256_storeu_ps(c + r * ldc + at, out);
        } else {
          float tmp[8];
          _mm256_storeu_ps(tmp, out);
          std::copy(tmp, tmp + cols, c + r * ldc + at);
        }
      }
    }
}

/// `x16`: the quantized activations (+ 128, so 0..255) as int16, rows of
/// ld16 = 4 * quads.
void gemmI8DotAvx2(const int16_t *x16, int64_t ld16, const float *xs, int64_t m,
                   const PackedWeight &w, const float *bias, float *c,
                   int64_t ldc, int64_t panelBegin, int64_t panelEnd) {
  constexpr int MR = 3;
  const I8DotLayout l(w);
  const int64_t quads = l.quads, panelBytes = l.panelBytes;
  // One row: PR panels at once, so that as many weight streams are in
  // flight (one stream alone does not reach the memory bandwidth).
  constexpr int PR = 3;
  float biasBuf[PR * kPanel];
  for (int64_t p = panelBegin; p < panelEnd;) {
    const int64_t have = m == 1 ? std::min<int64_t>(PR, panelEnd - p) : 1;
    int nvalid =
        static_cast<int>(std::min<int64_t>(have * kPanel, w.n - p * kPanel));
    const float *b = biasTile(bias, p * kPanel, nvalid,
                              static_cast<int>(have * kPanel), biasBuf);
    const int8_t *panel = l.base + p * panelBytes;
    const float *sc = l.scales + p * kPanel;
    const int32_t *su = l.sums + p * kPanel;
    int64_t tiles = (m + MR - 1) / MR;
    for (int64_t t = 0, r = 0; r < m; ++t) {
      int64_t rows = m / tiles + (t < m % tiles ? 1 : 0);
      const int16_t *x = x16 + r * ld16;
      float *cc = c + r * ldc + p * kPanel;
      auto run = [&](auto rc, auto pc) {
        tileAvx2<decltype(rc)::value, decltype(pc)::value>(
            x, ld16, xs + r, panel, panelBytes, quads, sc, su, b, nvalid, cc,
            ldc);
      };
      using One = std::integral_constant<int, 1>;
      if (rows == 3)
        run(std::integral_constant<int, 3>(), One());
      else if (rows == 2)
        run(std::integral_constant<int, 2>(), One());
      else if (have == 3)
        run(One(), std::integral_constant<int, 3>());
      else if (have == 2)
        run(One(), std::integral_constant<int, 2>());
      else
        run(One(), One());
      r += rows;
    }
    p += have;
  }
}
} // namespace

uint64_t gemmI8DotScratchBytes(int64_t m, int64_t k) {
  const uint64_t q = static_cast<uint64_t>(m * rowBytes(k));
  return scratchRound(q) + scratchRound(4 * static_cast<uint64_t>(m)) +
         (hasVnni() ? 0 : scratchRound(2 * q));
}

void gemmI8Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, ThreadPool *pool) {
  const int64_t ldq = rowBytes(w.k);
  // Taken as gemmI8DotScratchBytes counts them.
  ThreadScratch::Scope scope;
  uint8_t *xq = scope.array<uint8_t>(m * ldq);
  float *xs = scope.array<float>(m);
  quantizeRowsI8(a, m, w.k, lda, w.inputScale, xq, ldq, xs);
  const bool vnni = hasVnni();
  int16_t *x16 = nullptr;
  if (!vnni) {
    x16 = scope.array<int16_t>(m * ldq);
    for (int64_t i = 0; i < m * ldq; ++i)
      x16[i] = xq[i];
  }
  const AmxMode amx = amxMode();
  const bool tiles = amx == AmxMode::Emulated ||
                     (amx == AmxMode::Hardware && m >= kAmxMinRows);
  // Pairs of panels: the VNNI kernel and the tiles take panels in pairs.
  splitPanels(w, m, 2, false, pool, [&](int64_t p0, int64_t p1) {
    if (tiles && amx == AmxMode::Hardware)
      amx::hw::gemmI8(xq, ldq, xs, m, w, bias, c, ldc, p0, p1);
    else if (tiles)
      amx::emu::gemmI8(xq, ldq, xs, m, w, bias, c, ldc, p0, p1);
    else if (vnni)
      vnni::gemmI8Dot(xq, ldq, xs, m, w, bias, c, ldc, p0, p1);
    else
      gemmI8DotAvx2(x16, ldq, xs, m, w, bias, c, ldc, p0, p1);
  });
}

} // namespace ds::rt::kernels
