//===- GemmTest.cpp - packed GEMM and expert FFN against plain loops ------===//

#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"
#include "ds/support/DType.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace ds::rt;
using namespace ds::rt::kernels;

namespace {

struct Aligned {
  std::vector<float> storage;
  void *data;
  explicit Aligned(size_t bytes) : storage(bytes / 4 + 32) {
    auto p = reinterpret_cast<uintptr_t>(storage.data());
    data = reinterpret_cast<void *>((p + 63) & ~uintptr_t{63});
  }
};

/// The AMX tile kernels' mode for a scope (setAmxMode), then the one
/// before.
struct AmxModeScope {
  AmxMode before;
  explicit AmxModeScope(AmxMode mode) : before(setAmxMode(mode)) {}
  ~AmxModeScope() { setAmxMode(before); }
};

/// Fills v with uniform values in [-1, 1).
void fillUniform(std::vector<float> &v, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1, 1);
  for (float &x : v)
    x = dist(rng);
}

/// bias + a wᵀ in double: a [m, k], w [n, k] row-major.
std::vector<double> denseProduct(const std::vector<float> &a, int64_t m,
                                 int64_t k, const std::vector<float> &w,
                                 int64_t n, const std::vector<float> &bias) {
  std::vector<double> out;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias[j];
      for (int64_t i = 0; i < k; ++i)
        acc += static_cast<double>(a[r * k + i]) * w[j * k + i];
      out.push_back(acc);
    }
  return out;
}

/// Max |a - b| / max |b|.
double relError(const std::vector<float> &a, const std::vector<double> &b) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::abs(a[i] - b[i]));
    mag = std::max(mag, std::abs(b[i]));
  }
  return mag > 0 ? err / mag : err;
}

void checkGemm(int64_t m, int64_t n, int64_t k, bool int8, bool withBias,
               ThreadPool *pool, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1, 1);
  std::uniform_int_distribution<int> qdist(-127, 127);
  int64_t lda = k + 3, ldc = n + 5; // strided rows
  std::vector<float> a(m * lda), bias(n), wf(n * k), scales(n);
  std::vector<int8_t> wq(n * k);
  for (float &v : a)
    v = dist(rng);
  for (float &v : bias)
    v = dist(rng);
  for (int64_t i = 0; i < n * k; ++i) {
    wq[i] = static_cast<int8_t>(qdist(rng));
    wf[i] = dist(rng);
  }
  for (float &s : scales)
    s = 0.01f + 0.01f * std::abs(dist(rng));
  WeightFormat format = int8 ? WeightFormat::I8 : WeightFormat::F32;
  Aligned packed(packedWeightBytes(format, n, k));
  if (int8)
    packWeightI8(wq.data(), scales.data(), n, k, packed.data);
  else
    packWeightF32(wf.data(), n, k, packed.data);
  std::vector<float> c(m * ldc, 7.0f);
  gemm(a.data(), m, lda, {format, n, k, packed.data},
       withBias ? bias.data() : nullptr, c.data(), ldc, pool);
  std::vector<float> got;
  std::vector<double> want;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = withBias ? bias[j] : 0.0;
      for (int64_t i = 0; i < k; ++i)
        acc += static_cast<double>(a[r * lda + i]) *
               (int8 ? wq[j * k + i] * static_cast<double>(scales[j])
                     : wf[j * k + i]);
      want.push_back(acc);
      got.push_back(c[r * ldc + j]);
    }
  EXPECT_LT(relError(got, want), 1e-5)
      << "m=" << m << " n=" << n << " k=" << k << " int8=" << int8;
  // Padding columns of C are untouched.
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = n; j < ldc; ++j)
      ASSERT_EQ(c[r * ldc + j], 7.0f);
}

TEST(Gemm, MatchesLoopsOnOddShapes) {
  std::mt19937 rng(1);
  for (bool int8 : {false, true})
    for (int64_t m : {1, 2, 3, 4, 5, 12, 13, 30})
      for (int64_t n : {1, 15, 16, 17, 33, 64, 70, 150, 200})
        for (int64_t k : {1, 7, 64, 300, 600})
          checkGemm(m, n, k, int8, (m + n) % 2 == 0, nullptr, rng);
}

/// bf16 / f16 weights (values of that precision, so packing is exact),
/// widened in registers or, for several row tiles, into an f32 slab.
TEST(Gemm, Bf16AndF16MatchLoops) {
  std::mt19937 rng(4);
  for (WeightFormat format : {WeightFormat::BF16, WeightFormat::F16})
    for (int64_t m : {1, 3, 6, 13, 40})
      for (int64_t n : {5, 16, 33, 150})
        for (int64_t k : {1, 31, 300}) {
          std::vector<float> a(m * k), w(n * k), bias(n);
          fillUniform(a, rng);
          fillUniform(bias, rng);
          fillUniform(w, rng);
          for (float &v : w)
            v = ds::roundToDType(v, format == WeightFormat::BF16
                                        ? ds::DType::BF16
                                        : ds::DType::F16);
          Aligned packed(packedWeightBytes(format, n, k));
          if (format == WeightFormat::BF16)
            packWeightBF16(w.data(), n, k, packed.data);
          else
            packWeightF16(w.data(), n, k, packed.data);
          std::vector<float> c(m * n);
          gemm(a.data(), m, k, {format, n, k, packed.data}, bias.data(),
               c.data(), n);
          EXPECT_LT(relError(c, denseProduct(a, m, k, w, n, bias)), 1e-5)
              << "format=" << static_cast<int>(format) << " m=" << m
              << " n=" << n << " k=" << k;
        }
}

/// Grouped formats: int4 and e4m3 values with a scale per (row, K group).
void checkGrouped(WeightFormat format, int64_t m, int64_t n, int64_t k,
                  int64_t group, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1, 1);
  int64_t groups = (k + group - 1) / group;
  std::vector<float> a(m * k), q(n * k), scales(n * groups);
  for (float &v : a)
    v = dist(rng);
  const bool int4 = format == WeightFormat::I4 || format == WeightFormat::I4H;
  for (float &v : q)
    v = int4 ? static_cast<float>(static_cast<int>(rng() % 16) - 8)
             : ds::f8e4m3ToFloat(
                   static_cast<uint8_t>(rng() % 0x7f | (rng() % 2) << 7));
  for (float &s : scales) {
    s = 0.01f + 0.05f * std::abs(dist(rng));
    // I4H stores f16 scales: values of that precision pack exactly.
    if (format == WeightFormat::I4H)
      s = ds::roundToDType(s, ds::DType::F16);
  }
  Aligned packed(packedWeightBytes(format, n, k, group));
  if (format == WeightFormat::I4)
    packWeightI4(q.data(), scales.data(), n, k, group, packed.data);
  else if (format == WeightFormat::I4H)
    packWeightI4H(q.data(), scales.data(), n, k, group, packed.data);
  else
    packWeightF8(q.data(), scales.data(), n, k, group, packed.data);
  std::vector<float> c(m * n);
  PackedWeight w{format, n, k, packed.data, group};
  gemm(a.data(), m, k, w, nullptr, c.data(), n);
  std::vector<double> want;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < k; ++i)
        acc += static_cast<double>(a[r * k + i]) * q[j * k + i] *
               scales[j * groups + i / group];
      want.push_back(acc);
    }
  EXPECT_LT(relError(c, want), 1e-5)
      << "format=" << static_cast<int>(format) << " m=" << m << " n=" << n
      << " k=" << k << " group=" << group;
}

TEST(Gemm, Int4AndFp8GroupsMatchLoops) {
  std::mt19937 rng(9);
  for (WeightFormat f : {WeightFormat::I4, WeightFormat::I4H, WeightFormat::F8})
    for (int64_t m : {1, 2, 4, 7, 13, 30})
      for (int64_t n : {5, 16, 40, 150})
        for (auto [k, g] : {std::pair<int64_t, int64_t>{64, 32},
                            {300, 128},
                            {512, 128},
                            {96, 96},
                            {40, 16}})
          checkGrouped(f, m, n, k, g, rng);
}

TEST(Gemm, Bf16InputsSumInVdpbf16psOrder) {
  // bf16 activations times bf16 weights (gemm's inputs = Round::BF16). With
  // AVX512_BF16 each output is the bias, then per (k, k + 1) pair the
  // product at k + 1 and then the one at k, each added with one rounding:
  // std::fma in that order gives the same bits. Without it the hint is
  // ignored and the result is the ordinary GEMM's. Either way every row is
  // the same alone, in any batch and over threads.
  const AmxModeScope vdpbf16ps(AmxMode::Off); // the tiles sum otherwise
  std::mt19937 rng(31);
  ThreadPool pool(2);
  for (int64_t k : {1, 2, 7, 64, 257})
    for (int64_t n : {5, 16, 48, 100})
      for (bool withBias : {false, true}) {
        const int64_t m = 30;
        std::vector<float> a(m * k), w(n * k), bias(n);
        fillUniform(a, rng);
        fillUniform(w, rng);
        fillUniform(bias, rng);
        for (float &v : a)
          v = ds::roundToDType(v, ds::DType::BF16);
        for (float &v : w)
          v = ds::roundToDType(v, ds::DType::BF16);
        Aligned packed(packedWeightBytes(WeightFormat::BF16, n, k));
        packWeightBF16(w.data(), n, k, packed.data);
        const PackedWeight pw{WeightFormat::BF16, n, k, packed.data};
        const float *b = withBias ? bias.data() : nullptr;
        std::vector<float> all(m * n), threaded(m * n), plain(m * n);
        gemm(a.data(), m, k, pw, b, all.data(), n, nullptr, Round::BF16);
        gemm(a.data(), m, k, pw, b, threaded.data(), n, &pool, Round::BF16);
        gemm(a.data(), m, k, pw, b, plain.data(), n);
        std::string at = "k " + std::to_string(k) + " n " + std::to_string(n);
        EXPECT_EQ(0, std::memcmp(all.data(), threaded.data(), 4 * m * n)) << at;
        for (int64_t rows : {1, 3, 4, 5, 12, 13}) {
          // Rows 7.. as a batch of `rows`: the same bits as in the batch
          // of 30.
          std::vector<float> part(rows * n);
          gemm(a.data() + 7 * k, rows, k, pw, b, part.data(), n, nullptr,
               Round::BF16);
          EXPECT_EQ(0,
                    std::memcmp(part.data(), all.data() + 7 * n, 4 * rows * n))
              << at << " rows " << rows;
        }
        if (!hasBF16Dot()) {
          EXPECT_EQ(0, std::memcmp(all.data(), plain.data(), 4 * m * n)) << at;
          continue;
        }
        for (int64_t r = 0; r < m; ++r)
          for (int64_t j = 0; j < n; ++j) {
            float acc = withBias ? bias[j] : 0.0f;
            for (int64_t i = 0; i < k; i += 2) {
              if (i + 1 < k)
                acc = std::fma(a[r * k + i + 1], w[j * k + i + 1], acc);
              acc = std::fma(a[r * k + i], w[j * k + i], acc);
            }
            ASSERT_EQ(all[r * n + j], acc) << at << " at " << r << "," << j;
          }
      }
}

/// Every weight format: a row's results are bit-identical whether it is
/// computed alone, in a small batch or in a large one, with or without
/// threads (tile shapes, the f32 slab and the panel split differ; the
/// arithmetic of a column must not).
TEST(Gemm, RowsAreBatchInvariant) {
  std::mt19937 rng(21);
  ThreadPool pool(2);
  // Several K blocks (KC = 256) and groups, and a partial last panel.
  const int64_t n = 150, k = 600, group = 128, groups = (k + group - 1) / group;
  std::vector<float> w(n * k), bias(n), q(n * k), scales(n * groups);
  std::vector<int8_t> q8(n * k);
  fillUniform(w, rng);
  fillUniform(bias, rng);
  for (float &s : scales)
    s = 0.01f + 0.05f * std::abs(w[&s - scales.data()]);
  for (int64_t i = 0; i < n * k; ++i)
    q8[i] = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  for (WeightFormat format :
       {WeightFormat::F32, WeightFormat::BF16, WeightFormat::F16,
        WeightFormat::I8, WeightFormat::I4, WeightFormat::I4H, WeightFormat::F8,
        WeightFormat::I8Dot, WeightFormat::I4Dot, WeightFormat::S24}) {
    bool grouped = format == WeightFormat::I4 || format == WeightFormat::I4H ||
                   format == WeightFormat::F8;
    // W4A8's groups divide K: 5 groups of 120 (as many as of 128).
    int64_t g = grouped ? group : format == WeightFormat::I4Dot ? 120 : 0;
    Aligned packed(packedWeightBytes(format, n, k, g));
    switch (format) {
    case WeightFormat::F32:
      packWeightF32(w.data(), n, k, packed.data);
      break;
    case WeightFormat::BF16:
      packWeightBF16(w.data(), n, k, packed.data);
      break;
    case WeightFormat::F16:
      packWeightF16(w.data(), n, k, packed.data);
      break;
    case WeightFormat::I8:
      packWeightI8(q8.data(), scales.data(), n, k, packed.data);
      break;
    case WeightFormat::I8Dot:
      packWeightI8Dot(q8.data(), scales.data(), n, k, packed.data);
      break;
    case WeightFormat::I4:
      for (int64_t i = 0; i < n * k; ++i)
        q[i] = static_cast<float>(q8[i] % 8);
      packWeightI4(q.data(), scales.data(), n, k, group, packed.data);
      break;
    case WeightFormat::I4H:
      for (int64_t i = 0; i < n * k; ++i)
        q[i] = static_cast<float>(q8[i] % 8);
      packWeightI4H(q.data(), scales.data(), n, k, group, packed.data);
      break;
    case WeightFormat::I4Dot:
      for (int64_t i = 0; i < n * k; ++i)
        q[i] = static_cast<float>(q8[i] % 8);
      packWeightI4Dot(q.data(), scales.data(), n, k, g, packed.data);
      break;
    case WeightFormat::F8:
      for (int64_t i = 0; i < n * k; ++i)
        q[i] = w[i] * 400.0f;
      packWeightF8(q.data(), scales.data(), n, k, group, packed.data);
      break;
    default:
      packWeightS24(w.data(), n, k, packed.data);
      break;
    }
    PackedWeight pw{format, n, k, packed.data, g};
    for (int64_t m : {40, 13, 7}) {
      std::vector<float> a(m * k);
      fillUniform(a, rng);
      std::vector<float> all(m * n);
      gemm(a.data(), m, k, pw, bias.data(), all.data(), n, &pool);
      for (int64_t r = 0; r < m; ++r) {
        // Alone, and as the first of up to three rows.
        for (int64_t rows : {int64_t{1}, std::min<int64_t>(3, m - r)}) {
          std::vector<float> few(rows * n);
          gemm(a.data() + r * k, rows, k, pw, bias.data(), few.data(), n);
          ASSERT_EQ(
              0, std::memcmp(few.data(), all.data() + r * n, n * sizeof(float)))
              << "format " << static_cast<int>(format) << ": row " << r
              << " of " << m << " differs computed with " << rows << " row(s)";
        }
      }
    }
  }
}

/// W8A8: rows quantized per row (or with a static scale) times int8
/// weights, against the dequantized product in double.
void checkW8A8(int64_t m, int64_t n, int64_t k, float staticScale,
               bool withBias, ThreadPool *pool, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> a(m * k), scales(n), bias(n);
  std::vector<int8_t> q(n * k);
  for (float &v : a)
    v = dist(rng);
  for (int8_t &v : q)
    v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  for (float &v : scales)
    v = 0.001f + 0.01f * std::abs(dist(rng));
  for (float &v : bias)
    v = dist(rng);
  Aligned packed(packedWeightBytes(WeightFormat::I8Dot, n, k));
  packWeightI8Dot(q.data(), scales.data(), n, k, packed.data);
  PackedWeight w{WeightFormat::I8Dot, n, k, packed.data};
  w.inputScale = staticScale;
  std::vector<float> c(m * n);
  gemm(a.data(), m, k, w, withBias ? bias.data() : nullptr, c.data(), n, pool);
  std::vector<double> want;
  for (int64_t r = 0; r < m; ++r) {
    float s = staticScale;
    if (!(s > 0)) {
      float mx = 0;
      for (int64_t i = 0; i < k; ++i)
        mx = std::max(mx, std::abs(a[r * k + i]));
      s = mx / 127.0f;
    }
    for (int64_t j = 0; j < n; ++j) {
      double acc = withBias ? bias[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) {
        float xq =
            std::clamp(std::nearbyint(a[r * k + i] / s), -128.0f, 127.0f);
        acc += static_cast<double>(xq) * s * q[j * k + i] * scales[j];
      }
      want.push_back(acc);
    }
  }
  EXPECT_LT(relError(c, want), 1e-5)
      << "m=" << m << " n=" << n << " k=" << k << " static=" << staticScale;
}

TEST(Gemm, W8A8MatchesDequantizedProduct) {
  std::mt19937 rng(12);
  for (int64_t m : {1, 3, 12, 13, 40})
    for (int64_t n : {1, 16, 33, 100})
      for (int64_t k : {1, 6, 64, 257})
        checkW8A8(m, n, k, 0.0f, (m + k) % 2 == 0, nullptr, rng);
  checkW8A8(5, 40, 100, 0.02f, true, nullptr, rng); // static, with clipping
  ThreadPool pool(3);
  checkW8A8(64, 512, 256, 0.0f, true, &pool, rng);
}

/// W4A8: the documented arithmetic, bit for bit (GemmInt4Dot.cpp): rows
/// quantized as W8A8's, per K group the exact integer dot product times the
/// group's (f16) scale added with one FMA, in group order, then times the
/// row's scale plus the bias with one FMA; on the VNNI and AVX2 kernels
/// (batcher.test runs Gemm* with DS_CPU_AVX2=1), serial and split. Also
/// close to the dequantized product in double.
void checkW4A8(int64_t m, int64_t n, int64_t k, int64_t group,
               float staticScale, bool withBias, ThreadPool *pool,
               std::mt19937 &rng) {
  SCOPED_TRACE(::testing::Message()
               << "m=" << m << " n=" << n << " k=" << k << " group=" << group
               << " static=" << staticScale);
  const int64_t groups = k / group;
  std::uniform_real_distribution<float> dist(-2, 2);
  std::vector<float> a(m * k), q(n * k), scales(n * groups), bias(n);
  for (float &v : a)
    v = dist(rng);
  for (float &v : q)
    v = static_cast<float>(static_cast<int>(rng() % 16) - 8);
  for (float &v : scales) // f16 values: the packer keeps them exactly
    v = ::ds::halfToFloat(
        ::ds::floatToHalf(0.001f + 0.01f * std::abs(dist(rng))));
  for (float &v : bias)
    v = dist(rng);
  Aligned packed(packedWeightBytes(WeightFormat::I4Dot, n, k, group));
  packWeightI4Dot(q.data(), scales.data(), n, k, group, packed.data);
  PackedWeight w{WeightFormat::I4Dot, n, k, packed.data, group};
  w.inputScale = staticScale;
  std::vector<float> c(m * n), want(m * n);
  std::vector<double> close;
  gemm(a.data(), m, k, w, withBias ? bias.data() : nullptr, c.data(), n, pool);
  for (int64_t r = 0; r < m; ++r) {
    float s = staticScale;
    if (!(s > 0)) {
      float mx = 0;
      for (int64_t i = 0; i < k; ++i)
        mx = std::max(mx, std::abs(a[r * k + i]));
      s = mx / 127.0f;
    }
    std::vector<int32_t> xq(k);
    for (int64_t i = 0; i < k; ++i)
      xq[i] = static_cast<int32_t>(
          std::clamp(std::nearbyint(a[r * k + i] / s), -128.0f, 127.0f));
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0;
      double exact = withBias ? bias[j] : 0.0;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int64_t i = g * group; i < (g + 1) * group; ++i) {
          dot += xq[i] * static_cast<int32_t>(q[j * k + i]);
          exact += static_cast<double>(xq[i]) * s * q[j * k + i] *
                   scales[j * groups + g];
        }
        acc = std::fma(static_cast<float>(dot), scales[j * groups + g], acc);
      }
      want[r * n + j] = std::fma(acc, s, withBias ? bias[j] : 0.0f);
      close.push_back(exact);
    }
  }
  EXPECT_EQ(0, std::memcmp(c.data(), want.data(), c.size() * sizeof(float)));
  EXPECT_LT(relError(c, close), 1e-5);
}

TEST(Gemm, W4A8IsItsDocumentedArithmetic) {
  std::mt19937 rng(13);
  for (int64_t m : {1, 3, 4, 5, 13})
    for (int64_t n : {1, 16, 33, 100})
      for (auto [k, group] :
           {std::pair<int64_t, int64_t>{32, 32}, {64, 8}, {96, 32}, {256, 128}})
        checkW4A8(m, n, k, group, 0.0f, (m + n) % 2 == 0, nullptr, rng);
  checkW4A8(5, 40, 128, 32, 0.02f, true, nullptr, rng); // static, clipping
  ThreadPool pool(3);
  checkW4A8(64, 512, 256, 32, 0.0f, true, &pool, rng);
  checkW4A8(1, 1000, 1024, 32, 0.0f, false, &pool, rng);
}

/// 2:4: the packer keeps the two largest magnitudes of every 4; the product
/// equals the dense product with the pruned matrix.
TEST(Gemm, Sparse24MatchesPrunedDense) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int64_t m : {1, 2, 5, 7, 16})
    for (int64_t n : {3, 16, 40, 130})
      for (int64_t k : {4, 64, 260}) {
        std::vector<float> a(m * k), w(n * k), bias(n);
        for (float &v : a)
          v = dist(rng);
        for (float &v : w)
          v = dist(rng);
        for (float &v : bias)
          v = dist(rng);
        std::vector<float> pruned = w;
        for (int64_t r = 0; r < n; ++r)
          for (int64_t g = 0; g < k / 4; ++g) {
            float *q = &pruned[r * k + g * 4];
            int order[4] = {0, 1, 2, 3};
            std::stable_sort(order, order + 4, [&](int x, int y) {
              return std::abs(q[x]) > std::abs(q[y]);
            });
            q[order[2]] = 0;
            q[order[3]] = 0;
          }
        Aligned packed(packedWeightBytes(WeightFormat::S24, n, k));
        packWeightS24(w.data(), n, k, packed.data);
        std::vector<float> c(m * n);
        gemm(a.data(), m, k, {WeightFormat::S24, n, k, packed.data},
             bias.data(), c.data(), n);
        std::vector<double> want = denseProduct(a, m, k, pruned, n, bias);
        EXPECT_LT(relError(c, want), 1e-5)
            << "m=" << m << " n=" << n << " k=" << k;
        // Packing the pruned matrix gives the same product.
        Aligned again(packedWeightBytes(WeightFormat::S24, n, k));
        packWeightS24(pruned.data(), n, k, again.data);
        std::vector<float> c2(m * n);
        gemm(a.data(), m, k, {WeightFormat::S24, n, k, again.data}, bias.data(),
             c2.data(), n);
        EXPECT_LT(relError(c2, want), 1e-5);
      }
}

TEST(Gemm, ZeroDepthGivesBias) {
  std::mt19937 rng(2);
  checkGemm(3, 20, 0, false, true, nullptr, rng);
}

TEST(Gemm, ThreadedMatchesSerial) {
  ThreadPool pool(3);
  std::mt19937 rng(3);
  checkGemm(40, 200, 256, false, true, &pool, rng);
  checkGemm(40, 200, 256, true, false, &pool, rng);
  // Few rows: wide panel groups split over the threads.
  checkGemm(1, 1000, 300, false, true, &pool, rng);
  checkGemm(3, 1000, 300, true, true, &pool, rng);
}

TEST(MoEExperts, OnlyRoutedExpertsAndWeightedSum) {
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-1, 1);
  const int64_t n = 9, h = 20, inter = 12, experts = 5, topK = 2;
  std::vector<float> x(n * h), weights(n * topK);
  std::vector<int32_t> indices(n * topK);
  for (float &v : x)
    v = dist(rng);
  for (int64_t t = 0; t < n; ++t) {
    // Expert 4 never receives a token; its weights are NaN so any use shows.
    indices[t * topK] = static_cast<int32_t>(t % 3);
    indices[t * topK + 1] = 3;
    weights[t * topK] = 0.7f;
    weights[t * topK + 1] = 0.3f;
  }
  std::vector<std::vector<float>> gu(experts), dn(experts);
  std::vector<Aligned> guP, dnP;
  std::vector<PackedWeight> guW, dnW;
  for (int64_t e = 0; e < experts; ++e) {
    gu[e].resize(2 * inter * h);
    dn[e].resize(h * inter);
    for (float &v : gu[e])
      v = e == 4 ? NAN : dist(rng);
    for (float &v : dn[e])
      v = e == 4 ? NAN : dist(rng);
    guP.emplace_back(packedWeightBytes(WeightFormat::F32, 2 * inter, h));
    dnP.emplace_back(packedWeightBytes(WeightFormat::F32, h, inter));
  }
  for (int64_t e = 0; e < experts; ++e) {
    packWeightF32(gu[e].data(), 2 * inter, h, guP[e].data);
    packWeightF32(dn[e].data(), h, inter, dnP[e].data);
    guW.push_back({WeightFormat::F32, 2 * inter, h, guP[e].data});
    dnW.push_back({WeightFormat::F32, h, inter, dnP[e].data});
  }
  std::vector<float> y(n * h);
  ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices.data(), topK,
                       experts, guW.data(), dnW.data(), inter, Act::Silu,
                       y.data()),
            -1);
  std::vector<double> want(n * h, 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < topK; ++j) {
      int64_t e = indices[t * topK + j];
      std::vector<double> hid(inter);
      for (int64_t i = 0; i < inter; ++i) {
        double g = 0, u = 0;
        for (int64_t c = 0; c < h; ++c) {
          g += gu[e][i * h + c] * static_cast<double>(x[t * h + c]);
          u += gu[e][(inter + i) * h + c] * static_cast<double>(x[t * h + c]);
        }
        hid[i] = g / (1 + std::exp(-g)) * u;
      }
      for (int64_t c = 0; c < h; ++c) {
        double acc = 0;
        for (int64_t i = 0; i < inter; ++i)
          acc += dn[e][c * inter + i] * hid[i];
        want[t * h + c] += weights[t * topK + j] * acc;
      }
    }
  EXPECT_LT(relError(y, want), 1e-5);
  indices[3] = 5;
  EXPECT_EQ(moeExperts(x.data(), n, h, weights.data(), indices.data(), topK,
                       experts, guW.data(), dnW.data(), inter, Act::Silu,
                       y.data()),
            5);
}

/// `experts` packed f32 experts of random weights: gate_up [2 inter, h]
/// and down [h, inter] each.
struct RandomExperts {
  std::vector<Aligned> storage;
  std::vector<PackedWeight> gateUp, down;
  RandomExperts(int64_t experts, int64_t h, int64_t inter, std::mt19937 &rng) {
    storage.reserve(2 * experts);
    for (int64_t e = 0; e < experts; ++e) {
      std::vector<float> gu(2 * inter * h), dn(h * inter);
      fillUniform(gu, rng);
      fillUniform(dn, rng);
      storage.emplace_back(packedWeightBytes(WeightFormat::F32, 2 * inter, h));
      packWeightF32(gu.data(), 2 * inter, h, storage.back().data);
      gateUp.push_back({WeightFormat::F32, 2 * inter, h, storage.back().data});
      storage.emplace_back(packedWeightBytes(WeightFormat::F32, h, inter));
      packWeightF32(dn.data(), h, inter, storage.back().data);
      down.push_back({WeightFormat::F32, h, inter, storage.back().data});
    }
  }
};

/// Top-2 routing of n tokens to two distinct random experts each.
std::vector<int32_t> spreadRouting(int64_t n, int64_t experts,
                                   std::mt19937 &rng) {
  std::vector<int32_t> idx(n * 2);
  for (int64_t t = 0; t < n; ++t) {
    idx[t * 2] = static_cast<int32_t>(rng() % experts);
    idx[t * 2 + 1] = static_cast<int32_t>(
        (idx[t * 2] + 1 + rng() % (experts - 1)) % experts);
  }
  return idx;
}

/// On workers the experts run side by side (one thread each) or, when too
/// few are active or one holds most rows, each GEMM splits over the
/// threads; either way the result is the serial one, bit for bit.
TEST(MoEExperts, WorkersGiveTheSameBits) {
  std::mt19937 rng(8);
  const int64_t n = 48, h = 128, inter = 96, experts = 8, topK = 2;
  std::vector<float> x(n * h), weights(n * topK);
  fillUniform(x, rng);
  fillUniform(weights, rng);
  RandomExperts ex(experts, h, inter, rng);
  const auto &guW = ex.gateUp, &dnW = ex.down;
  std::vector<int32_t> spread = spreadRouting(n, experts, rng),
                       skewed(n * topK);
  for (int64_t t = 0; t < n; ++t) {
    skewed[t * topK] = 0;
    skewed[t * topK + 1] = 1; // two experts active: fewer than 4 threads
  }
  for (const auto *indices : {&spread, &skewed}) {
    std::vector<float> y(n * h);
    ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices->data(), topK,
                         experts, guW.data(), dnW.data(), inter, Act::Silu,
                         y.data()),
              -1);
    for (unsigned workers : {1u, 3u}) {
      ThreadPool pool(workers);
      std::vector<float> yp(n * h);
      ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices->data(),
                           topK, experts, guW.data(), dnW.data(), inter,
                           Act::Silu, yp.data(), &pool),
                -1);
      EXPECT_EQ(yp, y) << workers << " workers, "
                       << (indices == &spread ? "spread" : "skewed");
    }
  }
}

/// Expert parallelism: each process holds a block of the experts and
/// computes only the slots routed to it; the blocks' results add up to the
/// whole layer's. Slots all routed to one block give that block the whole
/// result bit for bit and the other zeros.
TEST(MoEExperts, BlocksOfExpertsSumToTheWhole) {
  std::mt19937 rng(9);
  const int64_t n = 24, h = 64, inter = 48, experts = 8, topK = 2;
  std::vector<float> x(n * h), weights(n * topK);
  fillUniform(x, rng);
  fillUniform(weights, rng);
  RandomExperts ex(experts, h, inter, rng);
  const auto &guW = ex.gateUp, &dnW = ex.down;
  std::vector<int32_t> spread = spreadRouting(n, experts, rng), low(n * topK);
  for (int64_t t = 0; t < n; ++t) {
    low[t * topK] = static_cast<int32_t>(t % 4);
    low[t * topK + 1] = static_cast<int32_t>((t + 1) % 4);
  }
  const int64_t local = experts / 2;
  for (const auto *indices : {&spread, &low}) {
    std::vector<float> whole(n * h), sum(n * h, 0.0f);
    ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices->data(), topK,
                         experts, guW.data(), dnW.data(), inter, Act::Silu,
                         whole.data()),
              -1);
    std::vector<std::vector<float>> part(2, std::vector<float>(n * h));
    for (int64_t b = 0; b < 2; ++b) {
      ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices->data(),
                           topK, local, guW.data() + b * local,
                           dnW.data() + b * local, inter, Act::Silu,
                           part[b].data(), nullptr, {}, Round::None, nullptr,
                           ExpertBlock{b * local, experts}),
                -1);
      for (int64_t i = 0; i < n * h; ++i)
        sum[i] += part[b][i];
    }
    std::vector<double> want(whole.begin(), whole.end());
    EXPECT_LT(relError(sum, want), 1e-6);
    if (indices == &low) {
      EXPECT_EQ(part[0], whole);
      EXPECT_EQ(part[1], std::vector<float>(n * h, 0.0f));
    }
  }
  // Indices are checked against every expert, not the block's.
  spread[5] = static_cast<int32_t>(experts);
  std::vector<float> y(n * h);
  EXPECT_EQ(moeExperts(x.data(), n, h, weights.data(), spread.data(), topK,
                       local, guW.data(), dnW.data(), inter, Act::Silu,
                       y.data(), nullptr, {}, Round::None, nullptr,
                       ExpertBlock{0, experts}),
            experts);
}

/// Expert parallelism with an all-to-all: each slot's row computed alone
/// on the process holding its expert (one slot per row, weight 1), the
/// outputs brought back and added by moeCombine: the whole layer's result
/// bit for bit, whichever block computed a slot.
TEST(MoEExperts, SlotsComputedApartCombineToTheWhole) {
  std::mt19937 rng(10);
  const int64_t n = 20, h = 64, inter = 48, experts = 8, topK = 3;
  std::vector<float> x(n * h), weights(n * topK);
  fillUniform(x, rng);
  fillUniform(weights, rng);
  RandomExperts ex(experts, h, inter, rng);
  std::vector<int32_t> indices(n * topK);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < topK; ++j) // distinct, not ascending
      indices[t * topK + j] =
          static_cast<int32_t>((t * 5 + (topK - j) * 3) % experts);
  std::vector<float> whole(n * h);
  ASSERT_EQ(moeExperts(x.data(), n, h, weights.data(), indices.data(), topK,
                       experts, ex.gateUp.data(), ex.down.data(), inter,
                       Act::Silu, whole.data()),
            -1);
  // Two blocks of 4 experts; each runs the rows sent to it.
  const int64_t local = experts / 2;
  std::vector<float> slots(n * topK * h);
  for (int64_t b = 0; b < 2; ++b) {
    std::vector<float> rows, ones;
    std::vector<int32_t> expert;
    std::vector<int64_t> from;
    for (int64_t i = 0; i < n * topK; ++i)
      if (indices[i] / local == b) {
        rows.insert(rows.end(), x.begin() + (i / topK) * h,
                    x.begin() + (i / topK + 1) * h);
        expert.push_back(static_cast<int32_t>(indices[i] % local));
        ones.push_back(1.0f);
        from.push_back(i);
      }
    const int64_t m = static_cast<int64_t>(from.size());
    std::vector<float> out(m * h);
    ASSERT_EQ(moeExperts(rows.data(), m, h, ones.data(), expert.data(), 1,
                         local, ex.gateUp.data() + b * local,
                         ex.down.data() + b * local, inter, Act::Silu,
                         out.data()),
              -1);
    for (int64_t r = 0; r < m; ++r)
      std::copy_n(&out[r * h], h, &slots[from[r] * h]);
  }
  std::vector<float> y(n * h);
  moeCombine(slots.data(), n, h, weights.data(), indices.data(), topK,
             y.data());
  EXPECT_EQ(y, whole);
}

/// bf16 inputs times a BF16 weight (bf16-valued a and w, bias or not) by
/// gemm with Round::BF16 in the current mode, alone (`c`), over threads
/// (`threaded`) and rows 3.. as a batch of their own (`part`).
struct Bf16Run {
  std::vector<float> a, w, bias, c, threaded, part;
};
Bf16Run runBf16(int64_t m, int64_t n, int64_t k, bool withBias,
                std::mt19937 &rng, ThreadPool &pool) {
  Bf16Run r;
  r.a.resize(m * k);
  r.w.resize(n * k);
  r.bias.resize(n);
  fillUniform(r.a, rng);
  fillUniform(r.w, rng);
  fillUniform(r.bias, rng);
  for (float &v : r.a)
    v = ds::roundToDType(v, ds::DType::BF16);
  for (float &v : r.w)
    v = ds::roundToDType(v, ds::DType::BF16);
  Aligned packed(packedWeightBytes(WeightFormat::BF16, n, k));
  packWeightBF16(r.w.data(), n, k, packed.data);
  const PackedWeight pw{WeightFormat::BF16, n, k, packed.data};
  const float *b = withBias ? r.bias.data() : nullptr;
  r.c.resize(m * n);
  r.threaded.resize(m * n);
  gemm(r.a.data(), m, k, pw, b, r.c.data(), n, nullptr, Round::BF16);
  gemm(r.a.data(), m, k, pw, b, r.threaded.data(), n, &pool, Round::BF16);
  if (m > 3) {
    r.part.resize((m - 3) * n);
    gemm(r.a.data() + 3 * k, m - 3, k, pw, b, r.part.data(), n, nullptr,
         Round::BF16);
  }
  return r;
}

TEST(Gemm, AmxTilesBf16SumAsTdpbf16ps) {
  // On emulated tiles (the same kernel code as on the CPU's): per output,
  // the bias, then per chunk of 16 (k, k + 1) pairs the even-k and the
  // odd-k products summed from zero by FMAs, the two sums added, the
  // result added to the output. Shapes around the tile sizes: rows 16 / 32
  // per block, 16 columns per panel, 32 k per chunk.
  const AmxModeScope emulated(AmxMode::Emulated);
  std::mt19937 rng(41);
  ThreadPool pool(2);
  for (int64_t m : {1, 5, 16, 17, 32, 40})
    for (int64_t n : {5, 16, 40})
      for (int64_t k : {1, 2, 31, 32, 33, 70, 257}) {
        const bool withBias = (m + n + k) % 2 == 0;
        const Bf16Run r = runBf16(m, n, k, withBias, rng, pool);
        const std::string at = "m " + std::to_string(m) + " n " +
                               std::to_string(n) + " k " + std::to_string(k);
        ASSERT_EQ(0, std::memcmp(r.c.data(), r.threaded.data(), 4 * m * n))
            << at;
        if (m > 3)
          ASSERT_EQ(0, std::memcmp(r.part.data(), r.c.data() + 3 * n,
                                   4 * (m - 3) * n))
              << at;
        const int64_t pairs = (k + 1) / 2;
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            float acc = withBias ? r.bias[j] : 0.0f;
            for (int64_t q0 = 0; q0 < pairs; q0 += 16) {
              float even = 0, odd = 0;
              for (int64_t p = q0; p < std::min(pairs, q0 + 16); ++p) {
                even = std::fma(r.a[i * k + 2 * p], r.w[j * k + 2 * p], even);
                if (2 * p + 1 < k)
                  odd = std::fma(r.a[i * k + 2 * p + 1], r.w[j * k + 2 * p + 1],
                                 odd);
              }
              acc = acc + (even + odd);
            }
            ASSERT_EQ(r.c[i * n + j], acc) << at << " at " << i << "," << j;
          }
      }
}

/// W8A8 by gemm in the current mode.
std::vector<float> runW8A8(const std::vector<float> &a, int64_t m,
                           const PackedWeight &w, const float *bias,
                           ThreadPool *pool) {
  std::vector<float> c(m * w.n);
  gemm(a.data(), m, w.k, w, bias, c.data(), w.n, pool);
  return c;
}

TEST(Gemm, AmxTilesW8A8GiveTheOtherPathsBits) {
  // tdpbusd's integer sums are exact, and the epilogue is the VNNI /
  // AVX2 kernels': emulated tiles give their bits for every shape, the
  // partial last K chunk and the partial last panel included.
  std::mt19937 rng(43);
  ThreadPool pool(2);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int64_t m : {1, 3, 16, 17, 33, 40})
    for (int64_t n : {5, 16, 33})
      for (int64_t k : {1, 4, 60, 64, 65, 300})
        for (float staticScale : {0.0f, 0.02f}) {
          std::vector<float> a(m * k), scales(n), bias(n);
          std::vector<int8_t> q(n * k);
          for (float &v : a)
            v = dist(rng);
          for (int8_t &v : q)
            v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
          for (float &v : scales)
            v = 0.001f + 0.01f * std::abs(dist(rng));
          fillUniform(bias, rng);
          Aligned packed(packedWeightBytes(WeightFormat::I8Dot, n, k));
          packWeightI8Dot(q.data(), scales.data(), n, k, packed.data);
          PackedWeight w{WeightFormat::I8Dot, n, k, packed.data};
          w.inputScale = staticScale;
          const float *b = (m + k) % 2 ? bias.data() : nullptr;
          std::vector<float> want, tiles, threaded;
          {
            const AmxModeScope off(AmxMode::Off);
            want = runW8A8(a, m, w, b, nullptr);
          }
          {
            const AmxModeScope emulated(AmxMode::Emulated);
            tiles = runW8A8(a, m, w, b, nullptr);
            threaded = runW8A8(a, m, w, b, &pool);
          }
          const std::string at = "m " + std::to_string(m) + " n " +
                                 std::to_string(n) + " k " + std::to_string(k);
          ASSERT_EQ(0, std::memcmp(want.data(), tiles.data(), 4 * m * n)) << at;
          ASSERT_EQ(0, std::memcmp(want.data(), threaded.data(), 4 * m * n))
              << at;
        }
}

TEST(Gemm, AmxModeFollowsTheEnvironment) {
  // DS_CPU_AMX=emulate runs the tile kernels emulated, DS_CPU_AMX=0 turns
  // them off (tests restore the mode they change).
  const char *v = std::getenv("DS_CPU_AMX");
  const std::string env = v ? v : "";
  if (env == "emulate")
    EXPECT_EQ(amxMode(), AmxMode::Emulated);
  else if (env == "0")
    EXPECT_EQ(amxMode(), AmxMode::Off);
  else if (!cpuInfo().amxTile)
    EXPECT_EQ(amxMode(), AmxMode::Off);
  else
    GTEST_SKIP() << "AMX present: Hardware when Linux grants the tile state";
}

TEST(Gemm, AmxHardwareTilesMatchTheirModel) {
  // The CPU's tiles against the emulated ones, bit for bit (bf16), and
  // against the VNNI kernel (W8A8): what the emulation's arithmetic claims
  // is checked where AMX exists.
  const AmxModeScope hardware(AmxMode::Hardware);
  if (amxMode() != AmxMode::Hardware)
    GTEST_SKIP() << "no AMX tiles on this CPU (" << cpuInfo().model << ", "
                 << cpuInfo().isaSummary()
                 << "): the tile kernels ran emulated only";
  std::mt19937 rng(47);
  ThreadPool pool(2);
  for (int64_t m : {1, 17, 40})
    for (int64_t k : {33, 257}) {
      std::mt19937 same = rng;
      const Bf16Run hw = runBf16(m, 40, k, true, rng, pool);
      setAmxMode(AmxMode::Emulated);
      const Bf16Run emu = runBf16(m, 40, k, true, same, pool);
      setAmxMode(AmxMode::Hardware);
      ASSERT_EQ(0, std::memcmp(hw.c.data(), emu.c.data(), 4 * m * 40))
          << "bf16 m " << m << " k " << k;
      ASSERT_EQ(0, std::memcmp(hw.threaded.data(), emu.c.data(), 4 * m * 40))
          << "bf16 m " << m << " k " << k;
    }
  const int64_t m = 40, n = 40, k = 300;
  std::vector<float> a(m * k), scales(n, 0.01f);
  std::vector<int8_t> q(n * k);
  fillUniform(a, rng);
  for (int8_t &v : q)
    v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  Aligned packed(packedWeightBytes(WeightFormat::I8Dot, n, k));
  packWeightI8Dot(q.data(), scales.data(), n, k, packed.data);
  const PackedWeight w{WeightFormat::I8Dot, n, k, packed.data};
  const std::vector<float> tiles = runW8A8(a, m, w, nullptr, &pool);
  setAmxMode(AmxMode::Off);
  const std::vector<float> vnni = runW8A8(a, m, w, nullptr, &pool);
  ASSERT_EQ(0, std::memcmp(tiles.data(), vnni.data(), 4 * m * n));
}

} // namespace
