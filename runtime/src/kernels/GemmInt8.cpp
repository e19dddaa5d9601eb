//===- GemmInt8.cpp - W8A8: int8 activations times int8 weights ----------===//
//
// The GEMM of #ds.act_quant<i8, group = 0> inputs and int8 per-row weights:
// activation rows are quantized here (as support's ds::quantize does) and
// stored + 128 as uint8, so that AVX-512 VNNI's vpdpbusd (uint8 x int8)
// computes the dot products; the + 128 is taken back with the weights'
// column sums. Without VNNI a portable loop computes the same integers.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace ds::rt::kernels {
namespace vnni {
void gemmI8Dot(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
               const PackedWeight &w, const float *bias, float *c, int64_t ldc,
               int64_t panelBegin, int64_t panelEnd);
} // namespace vnni

bool hasVnni() {
  static const bool has = hasAvx512() && __builtin_cpu_supports("avx512vnni");
  return has;
}

namespace {
int64_t panelsOf(int64_t n) { return (n + kPanel - 1) / kPanel; }
int64_t quadsOf(int64_t k) { return (k + 3) / 4; }
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
/// The same integers without VNNI.
void gemmI8DotPortable(const uint8_t *xq, int64_t ldq, const float *xs,
                       int64_t m, const PackedWeight &w, const float *bias,
                       float *c, int64_t ldc, int64_t panelBegin,
                       int64_t panelEnd) {
  int64_t panels = panelsOf(w.n), quads = quadsOf(w.k);
  const auto *base = static_cast<const int8_t *>(w.data);
  const auto *scales =
      reinterpret_cast<const float *>(base + panels * quads * kPanel * 4);
  const auto *sums =
      reinterpret_cast<const int32_t *>(scales + panels * kPanel);
  for (int64_t p = panelBegin; p < panelEnd; ++p) {
    const int8_t *panel = base + p * quads * kPanel * 4;
    int nvalid = static_cast<int>(std::min<int64_t>(kPanel, w.n - p * kPanel));
    for (int64_t r = 0; r < m; ++r) {
      int32_t acc[kPanel] = {};
      const uint8_t *x = xq + r * ldq;
      for (int64_t g = 0; g < quads; ++g)
        for (int64_t j = 0; j < kPanel; ++j)
          for (int64_t i = 0; i < 4; ++i)
            acc[j] += static_cast<int32_t>(x[g * 4 + i]) *
                      panel[(g * kPanel + j) * 4 + i];
      for (int j = 0; j < nvalid; ++j) {
        int64_t col = p * kPanel + j;
        float v =
            static_cast<float>(acc[j] - 128 * sums[col]) * xs[r] * scales[col];
        c[r * ldc + col] = bias ? v + bias[col] : v;
      }
    }
  }
}
} // namespace

void gemmI8Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, ThreadPool *pool) {
  int64_t ldq = quadsOf(w.k) * 4;
  thread_local std::vector<uint8_t> xq;
  thread_local std::vector<float> xs;
  if (static_cast<int64_t>(xq.size()) < m * ldq)
    xq.resize(m * ldq);
  if (static_cast<int64_t>(xs.size()) < m)
    xs.resize(m);
  quantizeRowsI8(a, m, w.k, lda, w.inputScale, xq.data(), ldq, xs.data());
  int64_t panels = panelsOf(w.n);
  auto run = [&](int64_t p0, int64_t p1) {
    if (hasVnni())
      vnni::gemmI8Dot(xq.data(), ldq, xs.data(), m, w, bias, c, ldc, p0, p1);
    else
      gemmI8DotPortable(xq.data(), ldq, xs.data(), m, w, bias, c, ldc, p0, p1);
  };
  double ops = 2.0 * static_cast<double>(m) * w.n * w.k;
  if (!pool || pool->numWorkers() == 0 || panels < 4 || ops < 1e6) {
    run(0, panels);
    return;
  }
  // Even panel counts per chunk: the VNNI kernel takes panels in pairs.
  int64_t pairs = (panels + 1) / 2;
  const uint8_t *xqp = xq.data();
  const float *xsp = xs.data();
  pool->parallelFor(pairs, 1, [&](int64_t g0, int64_t g1) {
    int64_t p0 = g0 * 2, p1 = std::min(panels, g1 * 2);
    if (hasVnni())
      vnni::gemmI8Dot(xqp, ldq, xsp, m, w, bias, c, ldc, p0, p1);
    else
      gemmI8DotPortable(xqp, ldq, xsp, m, w, bias, c, ldc, p0, p1);
  });
}

} // namespace ds::rt::kernels
