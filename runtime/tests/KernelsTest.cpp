//===- KernelsTest.cpp - the runtime's kernels against references ---------===//
//
// Each kernel is compared with the reference interpreter's kernel on seeded
// random inputs: attention runs the interpreter's own code
// (ds/support/ReferenceKernels.h), the others double-precision ports of it.
// The references use a plain [batch, T, ...] cache gathered from the slots.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Kernels.h"
#include "../src/kernels/Math.h"
#include "ds/rt/ThreadPool.h"
#include "ds/support/DType.h"

#include "ds/support/ReferenceKernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

using namespace ds::rt;
using namespace ds::rt::kernels;

namespace {

constexpr double kTol = 1e-4;

std::vector<float> randomVec(std::mt19937 &rng, size_t n, float lo = -1.0f,
                             float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

double maxAbs(const std::vector<double> &v) {
  double m = 0;
  for (double x : v)
    m = std::max(m, std::abs(x));
  return m;
}

/// max |got - want| / max |want|; fails the test when `want` is all zero
/// (a comparison against nothing proves nothing) or sizes differ.
void expectClose(const std::vector<float> &got, const std::vector<double> &want,
                 double tol = kTol) {
  ASSERT_EQ(got.size(), want.size());
  double scale = maxAbs(want);
  ASSERT_GT(scale, 0.0) << "the reference is all zero";
  double err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got[i])) << "at " << i;
    err = std::max(err, std::abs(got[i] - want[i]));
  }
  EXPECT_LE(err / scale, tol) << "max abs error " << err << ", scale " << scale;
}

//===----------------------------------------------------------------------===//
// References (ported from the interpreter, in double)
//===----------------------------------------------------------------------===//

double refActivate(Act act, double x) {
  switch (act) {
  case Act::Silu:
    return x / (1.0 + std::exp(-x));
  case Act::Gelu:
    return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  case Act::GeluTanh: {
    const double c = std::sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
  }
  case Act::Relu:
    return x > 0 ? x : 0;
  case Act::Sigmoid:
    return 1.0 / (1.0 + std::exp(-x));
  }
  return x;
}

constexpr Act kActs[] = {Act::Silu, Act::Gelu, Act::GeluTanh, Act::Relu,
                         Act::Sigmoid};

/// The interpreter's attendOne (the same code), on double keys and values.
using ::ds::reference::attendOne;

/// Gathers slot slots[b] of a [numSlots, maxLen, row] cache into a plain
/// [batch, maxLen, row] cache, as the interpreter's cache is laid out.
std::vector<double> gatherSlots(const std::vector<float> &cache,
                                const std::vector<int64_t> &slots,
                                int64_t maxLen, int64_t row) {
  std::vector<double> plain(slots.size() * maxLen * row);
  for (size_t b = 0; b < slots.size(); ++b)
    for (int64_t i = 0; i < maxLen * row; ++i)
      plain[b * maxLen * row + i] = cache[slots[b] * maxLen * row + i];
  return plain;
}

/// The interpreter's evalAttention over a plain cache.
std::vector<double>
refAttention(const std::vector<float> &q, int64_t b, int64_t s, int64_t hq,
             int64_t d, const std::vector<double> &k,
             const std::vector<double> &v, int64_t t, int64_t hkv, int64_t dv,
             const std::vector<int64_t> &pos, int64_t window, double scale) {
  std::vector<double> o(b * s * hq * dv);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si)
      attendOne(
          &q[((bi * s + si) * hq) * d], hq, hkv, d, dv, pos[bi * s + si],
          window, scale,
          [&](int64_t j, int64_t h) {
            return &k[((bi * t + j) * hkv + h) * d];
          },
          [&](int64_t j, int64_t h) {
            return &v[((bi * t + j) * hkv + h) * dv];
          },
          &o[((bi * s + si) * hq) * dv]);
  return o;
}

/// The interpreter's evalMLA (expanding the latent through kv_b) over a plain
/// cache: ckv [b, t, rank], kpe [b, t, dr], kvb [h * (dn + dv), rank].
std::vector<double>
refMla(const std::vector<float> &qn, const std::vector<float> &qp, int64_t b,
       int64_t s, int64_t h, int64_t dn, int64_t dr,
       const std::vector<double> &ckv, const std::vector<double> &kpe,
       int64_t t, int64_t rank, const std::vector<float> &kvb, int64_t dv,
       const std::vector<int64_t> &pos, double scale) {
  int64_t n = h * (dn + dv);
  std::vector<double> kv(b * t * n);
  for (int64_t r = 0; r < b * t; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t c = 0; c < rank; ++c)
        acc += ckv[r * rank + c] * kvb[j * rank + c];
      kv[r * n + j] = acc;
    }
  int64_t dk = dn + dr;
  std::vector<double> keys(b * t * h * dk), vals(b * t * h * dv);
  for (int64_t bt = 0; bt < b * t; ++bt)
    for (int64_t hi = 0; hi < h; ++hi) {
      const double *row = &kv[(bt * h + hi) * (dn + dv)];
      double *key = &keys[(bt * h + hi) * dk];
      std::copy_n(row, dn, key);
      std::copy_n(&kpe[bt * dr], dr, key + dn);
      std::copy_n(row + dn, dv, &vals[(bt * h + hi) * dv]);
    }
  std::vector<float> query(h * dk);
  std::vector<double> o(b * s * h * dv);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si) {
      for (int64_t hi = 0; hi < h; ++hi) {
        std::copy_n(&qn[((bi * s + si) * h + hi) * dn], dn, &query[hi * dk]);
        std::copy_n(&qp[((bi * s + si) * h + hi) * dr], dr,
                    &query[hi * dk + dn]);
      }
      attendOne(
          query.data(), h, h, dk, dv, pos[bi * s + si], 0, scale,
          [&](int64_t j, int64_t hi) {
            return &keys[((bi * t + j) * h + hi) * dk];
          },
          [&](int64_t j, int64_t hi) {
            return &vals[((bi * t + j) * h + hi) * dv];
          },
          &o[((bi * s + si) * h) * dv]);
    }
  return o;
}

struct RefRouting {
  std::vector<double> weights;
  std::vector<int32_t> indices;
};

/// The interpreter's router (the same code, ds/support/ReferenceKernels.h).
RefRouting refRoute(const std::vector<float> &logits, const float *bias,
                    int64_t n, const RouterConfig &cfg) {
  ::ds::reference::RouteSpec spec;
  spec.numExperts = cfg.numExperts;
  spec.topK = cfg.topK;
  spec.nGroup = cfg.nGroup;
  spec.topkGroup = cfg.topkGroup;
  spec.sigmoid = cfg.sigmoid;
  spec.groupScoreMax = cfg.groupScoreMax;
  spec.normTopkProb = cfg.normTopkProb;
  spec.normEpsilon = cfg.normEpsilon;
  spec.scalingFactor = cfg.scalingFactor;
  if (cfg.kept)
    spec.kept.assign(cfg.kept, cfg.kept + cfg.numKept);
  RefRouting out{std::vector<double>(n * cfg.topK),
                 std::vector<int32_t>(n * cfg.topK)};
  std::vector<int64_t> indices(n * cfg.topK);
  ::ds::reference::route(logits.data(), bias, n, spec, out.weights.data(),
                         indices.data());
  for (size_t i = 0; i < indices.size(); ++i)
    out.indices[i] = static_cast<int32_t>(indices[i]);
  return out;
}

//===----------------------------------------------------------------------===//
// Elementwise, norm, embedding
//===----------------------------------------------------------------------===//

TEST(Kernels, Activate) {
  std::mt19937 rng(1);
  std::vector<float> x = randomVec(rng, 200, -6.0f, 6.0f);
  x.push_back(0.0f);
  for (Act act : kActs) {
    std::vector<float> got;
    std::vector<double> want;
    for (float v : x) {
      got.push_back(activate(act, v));
      want.push_back(refActivate(act, v));
    }
    SCOPED_TRACE(static_cast<int>(act));
    expectClose(got, want);
  }
  // The two GELU forms are distinct functions.
  EXPECT_NE(activate(Act::Gelu, 1.5f), activate(Act::GeluTanh, 1.5f));
  EXPECT_EQ(activate(Act::Relu, -2.0f), 0.0f);
}

// The vectorizable expf behind SiLU, sigmoid and the attention softmax:
// within 3e-7 relative of exp() in double over the whole clamped range, and
// finite at the ends (large |x| in SiLU and sigmoid).
TEST(Kernels, ExpApprox) {
  double worst = 0;
  for (double x = -87.0; x <= 88.0; x += 0.001) {
    float xf = static_cast<float>(x);
    double want = std::exp(static_cast<double>(xf));
    worst = std::max(worst, std::abs(expApprox(xf) - want) / want);
  }
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(expApprox(0.0f), 1.0f);
  EXPECT_TRUE(std::isnan(expApprox(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isfinite(expApprox(1000.0f)));
  EXPECT_GT(expApprox(-1000.0f), 0.0f);
  EXPECT_LT(std::abs(activate(Act::Silu, -200.0f)), 1e-30f);
  EXPECT_EQ(activate(Act::Sigmoid, 200.0f), 1.0f);
}

// roundValues rounds exactly as the interpreter (ds::roundToDType) does,
// ties to even, subnormals, overflow and NaN included.
TEST(Kernels, RoundValuesMatchesTheInterpreter) {
  std::mt19937 rng(6);
  std::vector<float> x;
  for (int i = 0; i < 20000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng());
    float v;
    std::memcpy(&v, &bits, 4);
    x.push_back(v);
  }
  for (float v : {0.0f, -0.0f, 1.0f + 1.0f / 256, 65519.0f, 65520.0f, 6e-8f,
                  1e-40f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    x.push_back(v);
  for (auto [round, dtype] : {std::pair{Round::BF16, ds::DType::BF16},
                              std::pair{Round::F16, ds::DType::F16}}) {
    std::vector<float> y = x;
    roundValues(y.data(), static_cast<int64_t>(y.size()), round);
    for (size_t i = 0; i < x.size(); ++i) {
      float want = ds::roundToDType(x[i], dtype);
      if (std::isnan(want))
        ASSERT_TRUE(std::isnan(y[i])) << x[i];
      else
        ASSERT_EQ(y[i], want)
            << "x = " << x[i] << " dtype " << static_cast<int>(dtype);
    }
  }
}

TEST(Kernels, RmsNorm) {
  std::mt19937 rng(2);
  for (int64_t d : {1, 7, 37, 64}) {
    int64_t rows = 3;
    double eps = 1e-6;
    // Tiny inputs, where eps dominates the mean square, for d = 37.
    float range = d == 37 ? 1e-3f : 3.0f;
    std::vector<float> x = randomVec(rng, rows * d, -range, range);
    std::vector<float> w = randomVec(rng, d, 0.5f, 1.5f);
    std::vector<float> y(rows * d);
    rmsNorm(x.data(), w.data(), rows, d, eps, y.data());
    std::vector<double> want(rows * d);
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < d; ++c)
        ss += static_cast<double>(x[r * d + c]) * x[r * d + c];
      double inv = 1.0 / std::sqrt(ss / d + eps);
      for (int64_t c = 0; c < d; ++c)
        want[r * d + c] = w[c] * (x[r * d + c] * inv);
    }
    SCOPED_TRACE(d);
    expectClose(y, want);
  }
}

TEST(Kernels, Glu) {
  std::mt19937 rng(3);
  int64_t rows = 3, half = 19;
  std::vector<float> x = randomVec(rng, rows * 2 * half, -4.0f, 4.0f);
  for (Act act : kActs) {
    std::vector<float> y(rows * half);
    glu(x.data(), rows, half, act, y.data());
    std::vector<double> want(rows * half);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < half; ++c)
        want[r * half + c] =
            refActivate(act, x[r * 2 * half + c]) * x[r * 2 * half + half + c];
    SCOPED_TRACE(static_cast<int>(act));
    expectClose(y, want);
  }
}

TEST(Kernels, Embedding) {
  std::mt19937 rng(4);
  int64_t vocab = 7, h = 5;
  std::vector<float> table = randomVec(rng, vocab * h);
  std::vector<int64_t> ids = {3, 0, 6, 3};
  std::vector<float> out(ids.size() * h, -100.0f);
  EXPECT_EQ(
      embedding(table.data(), vocab, h, ids.data(), ids.size(), out.data()),
      -1);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < h; ++c)
      EXPECT_EQ(out[i * h + c], table[ids[i] * h + c]) << i << "," << c;

  std::vector<int64_t> bad = {1, 2, 7, 0};
  EXPECT_EQ(
      embedding(table.data(), vocab, h, bad.data(), bad.size(), out.data()), 2);
  std::vector<int64_t> negative = {-1};
  EXPECT_EQ(embedding(table.data(), vocab, h, negative.data(), 1, out.data()),
            0);
  EXPECT_EQ(embedding(table.data(), vocab, h, nullptr, 0, out.data()), -1);
}

/// A vocabulary-split embedding: each block of rows looks up its own ids,
/// zeros for the rest, so the blocks add up to the whole lookup exactly.
TEST(Kernels, EmbeddingBlocksAddUpToTheWhole) {
  std::mt19937 rng(5);
  const int64_t vocab = 8, h = 6, rows = 4;
  std::vector<float> table = randomVec(rng, vocab * h);
  std::vector<int64_t> ids = {3, 4, 7, 0, 5};
  std::vector<float> whole(ids.size() * h), sum(ids.size() * h, 0.0f);
  ASSERT_EQ(
      embedding(table.data(), vocab, h, ids.data(), ids.size(), whole.data()),
      -1);
  for (int64_t b = 0; b < vocab / rows; ++b) {
    std::vector<float> part(ids.size() * h, -100.0f);
    ASSERT_EQ(embeddingBlock(table.data() + b * rows * h, b * rows, rows, vocab,
                             h, ids.data(), ids.size(), part.data()),
              -1);
    for (size_t i = 0; i < ids.size(); ++i) {
      bool mine = ids[i] >= b * rows && ids[i] < (b + 1) * rows;
      for (int64_t c = 0; c < h; ++c) {
        EXPECT_EQ(part[i * h + c], mine ? whole[i * h + c] : 0.0f);
        sum[i * h + c] += part[i * h + c];
      }
    }
  }
  EXPECT_EQ(sum, whole);
  // Ids are checked against the whole vocabulary, not the block.
  std::vector<int64_t> bad = {1, 8};
  std::vector<float> out(bad.size() * h);
  EXPECT_EQ(embeddingBlock(table.data(), 0, rows, vocab, h, bad.data(),
                           bad.size(), out.data()),
            1);
}

//===----------------------------------------------------------------------===//
// RoPE and the KV cache
//===----------------------------------------------------------------------===//

/// YaRN-like inverse frequencies: the base frequencies blended towards
/// base/factor by a linear ramp over the dimensions.
std::vector<float> yarnInvFreq(int64_t dim, double base, double factor) {
  int64_t half = dim / 2;
  std::vector<float> inv(half);
  for (int64_t j = 0; j < half; ++j) {
    double f = std::pow(base, -2.0 * j / dim);
    double ramp =
        std::clamp((j - 0.5) / std::max<double>(half - 1.5, 1.0), 0.0, 1.0);
    inv[j] = static_cast<float>(f / factor * ramp + f * (1.0 - ramp));
  }
  return inv;
}

TEST(Kernels, Rope) {
  std::mt19937 rng(5);
  int64_t tokens = 3, heads = 2, dFull = 10, dim = 8, half = dim / 2;
  std::vector<int64_t> positions = {5, 17, 42};
  std::vector<float> invFreq = yarnInvFreq(dim, 10000.0, 4.0);
  float scaling = static_cast<float>(0.1 * std::log(4.0) + 1.0);
  for (int32_t style : {0, 1, 2}) {
    std::vector<float> x = randomVec(rng, tokens * heads * dFull);
    std::vector<float> y = x;
    rope(y.data(), tokens, heads, dFull, dim, invFreq.data(), scaling, style,
         positions.data());
    std::vector<double> want(x.begin(), x.end());
    for (int64_t t = 0; t < tokens; ++t) {
      float p = static_cast<float>(positions[t]);
      for (int64_t h = 0; h < heads; ++h) {
        const float *in = &x[(t * heads + h) * dFull];
        double *out = &want[(t * heads + h) * dFull];
        for (int64_t j = 0; j < half; ++j) {
          float ang = p * invFreq[j]; // f32 angle, as Hugging Face
          double c = std::cos(static_cast<double>(ang)) * scaling;
          double s = std::sin(static_cast<double>(ang)) * scaling;
          switch (style) {
          case 0:
            out[j] = in[j] * c - in[j + half] * s;
            out[j + half] = in[j + half] * c + in[j] * s;
            break;
          case 1:
            out[2 * j] = in[2 * j] * c - in[2 * j + 1] * s;
            out[2 * j + 1] = in[2 * j + 1] * c + in[2 * j] * s;
            break;
          case 2:
            out[j] = in[2 * j] * c - in[2 * j + 1] * s;
            out[j + half] = in[2 * j + 1] * c + in[2 * j] * s;
            break;
          }
        }
      }
    }
    SCOPED_TRACE(style);
    expectClose(y, want);
    // Features past `dim` are not rotated; the rotated ones changed.
    for (int64_t r = 0; r < tokens * heads; ++r) {
      for (int64_t c = dim; c < dFull; ++c)
        EXPECT_EQ(y[r * dFull + c], x[r * dFull + c]);
      EXPECT_NE(y[r * dFull], x[r * dFull]);
    }
  }
}

TEST(Kernels, CacheUpdate) {
  std::mt19937 rng(6);
  int64_t numSlots = 4, maxLen = 6, row = 5, batch = 2, seq = 2;
  std::vector<int64_t> slots = {3, 1};
  std::vector<int64_t> positions = {2, 3, 0, 4};
  std::vector<float> cache(numSlots * maxLen * row, -7.0f);
  std::vector<float> update = randomVec(rng, batch * seq * row);
  cacheUpdate(cache.data(), maxLen, row, slots.data(), update.data(),
              positions.data(), batch, seq);
  std::vector<float> want(cache.size(), -7.0f);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < seq; ++s)
      std::copy_n(&update[(b * seq + s) * row], row,
                  &want[(slots[b] * maxLen + positions[b * seq + s]) * row]);
  EXPECT_EQ(cache, want);
}

/// The bits of x as a cache of type t stores them (round to nearest even).
std::vector<uint16_t> narrowBits(const std::vector<float> &x, KVType t) {
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    bits[i] =
        t == KVType::BF16 ? ::ds::floatToBF16(x[i]) : ::ds::floatToHalf(x[i]);
  return bits;
}

/// The bytes of x as a cache of type t stores them: narrowBits for bf16 /
/// f16, the e4m3 nearest x / scale (saturating) for e4m3.
std::vector<uint8_t> narrowBytes(const std::vector<float> &x, KVType t,
                                 float scale = 1.0f) {
  std::vector<uint8_t> bytes(x.size() * kvTypeSize(t));
  if (t == KVType::F8E4M3) {
    for (size_t i = 0; i < x.size(); ++i)
      bytes[i] = ::ds::floatToF8E4M3(x[i] / scale);
  } else {
    std::vector<uint16_t> bits = narrowBits(x, t);
    std::memcpy(bytes.data(), bits.data(), bytes.size());
  }
  return bytes;
}

/// x rounded to type t (the f32 values a narrow cache holds; an e4m3
/// cache's elements times its scale).
std::vector<float> roundedTo(const std::vector<float> &x, KVType t,
                             float scale = 1.0f) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = t == KVType::F8E4M3
               ? ::ds::f8e4m3ToFloat(::ds::floatToF8E4M3(x[i] / scale)) * scale
               : ::ds::roundToDType(x[i], t == KVType::BF16 ? ::ds::DType::BF16
                                                            : ::ds::DType::F16);
  return y;
}

TEST(Kernels, CacheUpdateNarrowRounds) {
  std::mt19937 rng(7);
  const int64_t numSlots = 3, maxLen = 5, row = 19, batch = 2, seq = 2;
  std::vector<int64_t> slots = {2, 0}, positions = {1, 4, 0, 3};
  std::vector<float> update = randomVec(rng, batch * seq * row, -300, 300);
  update[3] = 1.0f + 1.0f / 256; // a bf16 tie: rounds to even (1.0)
  for (KVType t : {KVType::BF16, KVType::F16}) {
    std::vector<uint16_t> cache(numSlots * maxLen * row, 0xabcd);
    cacheUpdate(cache.data(), t, maxLen, row, slots.data(), update.data(),
                positions.data(), batch, seq);
    std::vector<uint16_t> want(cache.size(), 0xabcd);
    std::vector<uint16_t> bits = narrowBits(update, t);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t s = 0; s < seq; ++s)
        std::copy_n(&bits[(b * seq + s) * row], row,
                    &want[(slots[b] * maxLen + positions[b * seq + s]) * row]);
    EXPECT_EQ(cache, want) << static_cast<int>(t);
  }
  EXPECT_EQ(narrowBits(update, KVType::BF16)[3], 0x3f80);
}

/// An e4m3 cache stores the e4m3 nearest x / scale, saturating at +-448
/// (never NaN), and widens back to exactly e4m3 * scale, on every ISA path
/// (rows of 37: 16-wide blocks and a tail).
TEST(Kernels, CacheUpdateF8ScalesAndSaturates) {
  std::mt19937 rng(8);
  const int64_t numSlots = 2, maxLen = 4, row = 37, batch = 2, seq = 1;
  const float scale = 0.125f;
  std::vector<int64_t> slots = {1, 0}, positions = {3, 2};
  std::vector<float> update = randomVec(rng, batch * seq * row, -50, 50);
  update[0] = 1e6f;   // saturates to 448 * scale
  update[1] = -60.0f; // -480 / scale: saturates to -448
  update[2] = 0.0f;
  update[3] = 1e-6f;            // underflows to 0
  update[4] = 1.0f + 1.0f / 16; // an e4m3 tie (1 + 1/16 between 1 and 1.125)
  std::vector<uint8_t> cache(numSlots * maxLen * row, 0x55);
  cacheUpdate(cache.data(), KVType::F8E4M3, maxLen, row, slots.data(),
              update.data(), positions.data(), batch, seq, scale);
  std::vector<uint8_t> want(cache.size(), 0x55);
  std::vector<uint8_t> bytes = narrowBytes(update, KVType::F8E4M3, scale);
  for (int64_t b = 0; b < batch; ++b)
    std::copy_n(&bytes[b * row], row,
                &want[(slots[b] * maxLen + positions[b]) * row]);
  EXPECT_EQ(cache, want);
  std::vector<float> wide(row);
  widenRow(&cache[(slots[0] * maxLen + positions[0]) * row], KVType::F8E4M3,
           row, wide.data(), scale);
  EXPECT_EQ(wide[0], 448.0f * scale);
  EXPECT_EQ(wide[1], -448.0f * scale);
  EXPECT_EQ(wide[2], 0.0f);
  EXPECT_EQ(wide[3], 0.0f);
  EXPECT_EQ(wide[4], 1.0f);
  std::vector<float> rounded = roundedTo(update, KVType::F8E4M3, scale);
  EXPECT_TRUE(std::equal(wide.begin(), wide.end(), rounded.begin()));
  for (int64_t c = 5; c < row; ++c)
    EXPECT_LE(std::abs(wide[c] - update[c]), std::abs(update[c]) / 16) << c;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

struct AttnCase {
  int64_t batch, seq, heads, kvHeads, d, dv, numSlots, maxLen, window;
  std::vector<int64_t> slots, positions;
};

/// Runs `attention` (serially and, when given, on `pool`) and compares with
/// the reference; returns the kernel's output.
std::vector<float> checkAttention(const AttnCase &c, uint32_t seed,
                                  ThreadPool *pool = nullptr) {
  std::mt19937 rng(seed);
  std::vector<float> q = randomVec(rng, c.batch * c.seq * c.heads * c.d);
  std::vector<float> k =
      randomVec(rng, c.numSlots * c.maxLen * c.kvHeads * c.d, -2.0f, 2.0f);
  std::vector<float> v =
      randomVec(rng, c.numSlots * c.maxLen * c.kvHeads * c.dv);
  double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  std::vector<float> out(c.batch * c.seq * c.heads * c.dv);
  attention(q.data(), c.batch, c.seq, c.heads, c.d, k.data(), v.data(),
            c.maxLen, c.kvHeads, c.dv, c.slots.data(), c.positions.data(),
            c.window, scale, out.data());
  std::vector<double> want =
      refAttention(q, c.batch, c.seq, c.heads, c.d,
                   gatherSlots(k, c.slots, c.maxLen, c.kvHeads * c.d),
                   gatherSlots(v, c.slots, c.maxLen, c.kvHeads * c.dv),
                   c.maxLen, c.kvHeads, c.dv, c.positions, c.window, scale);
  expectClose(out, want);
  if (pool) {
    std::vector<float> par(out.size());
    attention(q.data(), c.batch, c.seq, c.heads, c.d, k.data(), v.data(),
              c.maxLen, c.kvHeads, c.dv, c.slots.data(), c.positions.data(),
              c.window, scale, par.data(), pool);
    EXPECT_EQ(par, out);
  }
  return out;
}

TEST(Kernels, AttentionSingleQuery) {
  checkAttention({1, 1, 2, 2, 8, 8, 1, 8, 0, {0}, {5}}, 10);
  checkAttention({1, 1, 2, 2, 8, 8, 1, 8, 0, {0}, {0}}, 11);
}

TEST(Kernels, AttentionGqaSlotsPrefix) {
  // Two sequences in slots 3 and 1 of 4, each continuing a cached prefix.
  AttnCase c{2, 3, 4, 2, 16, 12, 4, 16, 0, {3, 1}, {4, 5, 6, 9, 10, 11}};
  std::vector<float> out = checkAttention(c, 12);
  // Distinct heads of one group see the same keys with different queries.
  EXPECT_NE(out[0], out[c.dv]);
}

TEST(Kernels, AttentionSlidingWindow) {
  AttnCase c{2, 3, 4, 2, 16, 12, 4, 16, 4, {3, 1}, {4, 5, 6, 9, 10, 11}};
  std::vector<float> windowed = checkAttention(c, 13);
  c.window = 0;
  std::vector<float> full = checkAttention(c, 13);
  EXPECT_NE(windowed, full); // the window matters for these positions
  // A window wider than every position is no window.
  c.window = 100;
  EXPECT_EQ(checkAttention(c, 13), full);
}

TEST(Kernels, AttentionSharedSlot) {
  // Tokens of one prompt packed as rows of length 1 in the same slot.
  checkAttention({3, 1, 4, 1, 8, 8, 3, 10, 0, {2, 2, 0}, {3, 4, 7}}, 14);
}

TEST(Kernels, AttentionThreaded) {
  ThreadPool pool(3);
  AttnCase c{2, 8, 8, 2, 64, 64, 3, 128, 0, {2, 0}, {}};
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < c.seq; ++s)
      c.positions.push_back(100 + b * 19 + s);
  checkAttention(c, 15, &pool);
  c.window = 32;
  checkAttention(c, 16, &pool);
}

//===----------------------------------------------------------------------===//
// MLA
//===----------------------------------------------------------------------===//

struct MlaCase {
  int64_t batch, seq, heads, dn, dr, dv, rank, numSlots, maxLen;
  std::vector<int64_t> slots, positions;
};

void checkMla(const MlaCase &c, uint32_t seed, ThreadPool *pool = nullptr) {
  std::mt19937 rng(seed);
  int64_t items = c.batch * c.seq * c.heads;
  std::vector<float> qn = randomVec(rng, items * c.dn);
  std::vector<float> qp = randomVec(rng, items * c.dr);
  std::vector<float> ckv =
      randomVec(rng, c.numSlots * c.maxLen * c.rank, -2.0f, 2.0f);
  std::vector<float> kpe =
      randomVec(rng, c.numSlots * c.maxLen * c.dr, -2.0f, 2.0f);
  std::vector<float> kvb = randomVec(rng, c.heads * (c.dn + c.dv) * c.rank);
  double scale = 1.0 / std::sqrt(static_cast<double>(c.dn + c.dr));
  std::vector<float> out(items * c.dv);
  mlaAttention(qn.data(), qp.data(), c.batch, c.seq, c.heads, c.dn, c.dr,
               ckv.data(), kpe.data(), c.maxLen, c.rank, kvb.data(), c.dv,
               c.slots.data(), c.positions.data(), scale, out.data());
  std::vector<double> want =
      refMla(qn, qp, c.batch, c.seq, c.heads, c.dn, c.dr,
             gatherSlots(ckv, c.slots, c.maxLen, c.rank),
             gatherSlots(kpe, c.slots, c.maxLen, c.dr), c.maxLen, c.rank, kvb,
             c.dv, c.positions, scale);
  expectClose(out, want);
  if (pool) {
    std::vector<float> par(out.size());
    mlaAttention(qn.data(), qp.data(), c.batch, c.seq, c.heads, c.dn, c.dr,
                 ckv.data(), kpe.data(), c.maxLen, c.rank, kvb.data(), c.dv,
                 c.slots.data(), c.positions.data(), scale, par.data(), pool);
    EXPECT_EQ(par, out);
  }
}

TEST(Kernels, MlaSmall) {
  checkMla({1, 1, 2, 4, 2, 3, 5, 1, 8, {0}, {0}}, 20);
  checkMla({1, 1, 2, 4, 2, 3, 5, 1, 8, {0}, {7}}, 21);
}

TEST(Kernels, MlaSlotsPrefix) {
  checkMla({2, 2, 2, 4, 2, 3, 5, 4, 10, {3, 1}, {6, 7, 2, 3}}, 22);
  checkMla({3, 1, 2, 4, 2, 3, 5, 2, 10, {1, 1, 0}, {4, 5, 9}}, 23);
}

TEST(Kernels, MlaThreaded) {
  ThreadPool pool(3);
  MlaCase c{2, 4, 8, 16, 8, 16, 32, 3, 128, {2, 0}, {}};
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < c.seq; ++s)
      c.positions.push_back(90 + b * 30 + s);
  checkMla(c, 24, &pool);
}

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

RefRouting runRoute(const std::vector<float> &logits, const float *bias,
                    int64_t n, const RouterConfig &cfg) {
  std::vector<float> w(n * cfg.topK);
  std::vector<int32_t> idx(n * cfg.topK, -1);
  route(logits.data(), bias, n, cfg, w.data(), idx.data());
  RefRouting want = refRoute(logits, bias, n, cfg);
  EXPECT_EQ(idx, want.indices);
  expectClose(w, want.weights);
  int64_t limit = cfg.kept ? cfg.numKept : cfg.numExperts;
  for (int32_t i : idx) {
    EXPECT_GE(i, 0);
    EXPECT_LT(i, limit);
  }
  return want;
}

TEST(Kernels, RouteSoftmaxTop2) {
  std::mt19937 rng(30);
  int64_t n = 16;
  RouterConfig cfg;
  cfg.numExperts = 6;
  cfg.topK = 2;
  std::vector<float> logits = randomVec(rng, n * cfg.numExperts, -3.0f, 3.0f);
  runRoute(logits, nullptr, n, cfg);
  cfg.normTopkProb = true;
  cfg.normEpsilon = 1e-20;
  RefRouting normed = runRoute(logits, nullptr, n, cfg);
  for (int64_t t = 0; t < n; ++t)
    EXPECT_NEAR(normed.weights[2 * t] + normed.weights[2 * t + 1], 1.0, 1e-6);
  cfg.scalingFactor = 2.5;
  runRoute(logits, nullptr, n, cfg);
}

TEST(Kernels, RouteSigmoidGrouped) {
  std::mt19937 rng(31);
  int64_t n = 64;
  RouterConfig cfg;
  cfg.numExperts = 8;
  cfg.topK = 3;
  cfg.sigmoid = true;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  cfg.normTopkProb = true;
  cfg.normEpsilon = 1e-20;
  cfg.scalingFactor = 2.5;
  std::vector<float> logits = randomVec(rng, n * cfg.numExperts, -3.0f, 3.0f);
  std::vector<float> bias = randomVec(rng, cfg.numExperts, -0.3f, 0.3f);
  std::vector<std::vector<int32_t>> selections;
  for (bool groupMax : {false, true}) {
    cfg.groupScoreMax = groupMax;
    selections.push_back(runRoute(logits, bias.data(), n, cfg).indices);
    selections.push_back(runRoute(logits, nullptr, n, cfg).indices);
  }
  // The bias and the group-score kind each change some selection, so the
  // comparisons above test them.
  EXPECT_NE(selections[0], selections[1]);
  EXPECT_NE(selections[0], selections[2]);
  RouterConfig ungrouped = cfg;
  ungrouped.nGroup = ungrouped.topkGroup = 1;
  EXPECT_NE(selections[0], refRoute(logits, bias.data(), n, ungrouped).indices);
}

TEST(Kernels, RoutePruned) {
  std::mt19937 rng(32);
  int64_t n = 32;
  std::vector<int64_t> kept = {0, 2, 3, 5, 7};
  RouterConfig cfg;
  cfg.numExperts = 8;
  cfg.topK = 2;
  cfg.kept = kept.data();
  cfg.numKept = static_cast<int64_t>(kept.size());
  cfg.normTopkProb = true;
  cfg.normEpsilon = 1e-20;
  std::vector<float> logits = randomVec(rng, n * cfg.numExperts, -3.0f, 3.0f);
  runRoute(logits, nullptr, n, cfg);
  cfg.sigmoid = true;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  cfg.scalingFactor = 2.5;
  std::vector<float> bias = randomVec(rng, cfg.numExperts, -0.3f, 0.3f);
  runRoute(logits, bias.data(), n, cfg);
}

// Placed experts: each selection becomes a slot holding that expert, the
// replica chosen by the token's own selection (the sum of its experts
// modulo the copies), so a hot expert's tokens spread over its replicas.
TEST(Kernels, RoutePlaced) {
  std::mt19937 rng(33);
  int64_t n = 64;
  std::vector<int64_t> kept = {0, 2, 3, 5, 7};
  // Kept expert 1 three times, expert 3 twice.
  std::vector<int64_t> slots = {1, 0, 3, 1, 2, 4, 3, 1};
  RouterConfig cfg;
  cfg.numExperts = 8;
  cfg.topK = 2;
  cfg.kept = kept.data();
  cfg.numKept = static_cast<int64_t>(kept.size());
  std::vector<float> logits = randomVec(rng, n * cfg.numExperts, -3.0f, 3.0f);
  RefRouting unplaced = refRoute(logits, nullptr, n, cfg);
  cfg.slots = slots.data();
  cfg.numSlots = static_cast<int64_t>(slots.size());
  std::vector<float> w(n * cfg.topK);
  std::vector<int32_t> idx(n * cfg.topK, -1);
  route(logits.data(), nullptr, n, cfg, w.data(), idx.data());
  expectClose(w, unplaced.weights);
  std::vector<int64_t> perSlot(slots.size(), 0);
  for (int64_t t = 0; t < n; ++t) {
    int64_t key = 0;
    for (int64_t j = 0; j < cfg.topK; ++j)
      key += unplaced.indices[t * cfg.topK + j];
    for (int64_t j = 0; j < cfg.topK; ++j) {
      int64_t e = unplaced.indices[t * cfg.topK + j];
      std::vector<int32_t> copies;
      for (size_t s = 0; s < slots.size(); ++s)
        if (slots[s] == e)
          copies.push_back(static_cast<int32_t>(s));
      ASSERT_EQ(idx[t * cfg.topK + j], copies[key % copies.size()])
          << "token " << t << " choice " << j;
      ++perSlot[idx[t * cfg.topK + j]];
    }
  }
  // Every replica of the experts that were selected takes some tokens.
  for (size_t s = 0; s < slots.size(); ++s)
    EXPECT_GT(perSlot[s], 0) << "slot " << s;
}

TEST(Kernels, RouteTiesAreStable) {
  RouterConfig cfg;
  cfg.numExperts = 8;
  cfg.topK = 2;
  std::vector<float> logits(8, 0.5f);
  RefRouting r = runRoute(logits, nullptr, 1, cfg);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{0, 1}));
  std::vector<int64_t> kept = {1, 4, 6};
  cfg.kept = kept.data();
  cfg.numKept = 3;
  r = runRoute(logits, nullptr, 1, cfg);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{0, 1}));
  // Grouped, with every group tied: the lowest groups are kept.
  cfg.kept = nullptr;
  cfg.numKept = 0;
  cfg.sigmoid = true;
  cfg.nGroup = 4;
  cfg.topkGroup = 2;
  cfg.topK = 3;
  r = runRoute(logits, nullptr, 1, cfg);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{0, 1, 2}));
}

} // namespace

namespace {
/// The GEMM form of MLA equals the per-row form; with a pool (heads split
/// into blocks) it is bit for bit the serial result.
struct MlaPackedCase {
  int64_t batch, seq, heads, dn, dr, dv, rank, maxLen, slotsN;
  std::vector<int64_t> slots, positions;
};

/// Checks the packed MLA against the per-row form; returns its output. With
/// a narrow `cacheType` the latents are rounded to it, and the packed MLA
/// over a cache of that type must give the f32 result bit for bit.
std::vector<float> checkMlaPacked(const MlaPackedCase &c, ThreadPool *pool,
                                  KVType cacheType = KVType::F32) {
  std::mt19937 rng(21);
  std::normal_distribution<float> d(0.0f, 1.0f);
  const int64_t batch = c.batch, seq = c.seq, heads = c.heads, dn = c.dn,
                dr = c.dr, dv = c.dv, rank = c.rank, maxLen = c.maxLen;
  auto fill = [&](std::vector<float> &v) {
    for (float &x : v)
      x = d(rng);
  };
  std::vector<float> qn(batch * seq * heads * dn), qp(batch * seq * heads * dr),
      ckv(c.slotsN * maxLen * rank), kpe(c.slotsN * maxLen * dr),
      kvb(heads * (dn + dv) * rank);
  fill(qn);
  fill(qp);
  fill(ckv);
  fill(kpe);
  fill(kvb);
  // e4m3 latents: scales 2^-4 and 2^-3 (|values| < 6: up to 96 and 48).
  const float ckvScale = cacheType == KVType::F8E4M3 ? 0.0625f : 1.0f,
              kpeScale = cacheType == KVType::F8E4M3 ? 0.125f : 1.0f;
  std::vector<float> ckvRaw = ckv, kpeRaw = kpe;
  if (cacheType != KVType::F32) {
    ckv = roundedTo(ckv, cacheType, ckvScale);
    kpe = roundedTo(kpe, cacheType, kpeScale);
  }
  std::vector<float> want(batch * seq * heads * dv),
      got(batch * seq * heads * dv), par(got.size());
  ds::rt::kernels::mlaAttention(qn.data(), qp.data(), batch, seq, heads, dn, dr,
                                ckv.data(), kpe.data(), maxLen, rank,
                                kvb.data(), dv, c.slots.data(),
                                c.positions.data(), 0.3, want.data());
  using ds::rt::kernels::PackedWeight;
  using ds::rt::kernels::WeightFormat;
  std::vector<std::vector<float>> storage;
  std::vector<PackedWeight> ukT, uv;
  auto pack = [&](int64_t n, int64_t k, auto element) {
    std::vector<float> w(n * k);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t col = 0; col < k; ++col)
        w[r * k + col] = element(r, col);
    storage.emplace_back(
        ds::rt::kernels::packedWeightBytes(WeightFormat::F32, n, k) / 4 + 16);
    float *dst = storage.back().data();
    dst += (16 - reinterpret_cast<uintptr_t>(dst) / 4 % 16) % 16;
    ds::rt::kernels::packWeightF32(w.data(), n, k, dst);
    return PackedWeight{WeightFormat::F32, n, k, dst};
  };
  storage.reserve(2 * heads);
  for (int64_t h = 0; h < heads; ++h) {
    ukT.push_back(pack(rank, dn, [&](int64_t r, int64_t i) {
      return kvb[(h * (dn + dv) + i) * rank + r];
    }));
    uv.push_back(pack(dv, rank, [&](int64_t col, int64_t r) {
      return kvb[(h * (dn + dv) + dn + col) * rank + r];
    }));
  }
  for (auto [out, p] : {std::pair{&got, static_cast<ThreadPool *>(nullptr)},
                        std::pair{&par, pool}})
    ds::rt::kernels::mlaAttentionPacked(
        qn.data(), qp.data(), batch, seq, heads, dn, dr, ckv.data(), kpe.data(),
        maxLen, rank, ukT.data(), uv.data(), dv, c.slots.data(),
        c.positions.data(), 0.3, out->data(), p);
  double err = 0, mag = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, static_cast<double>(std::abs(got[i] - want[i])));
    mag = std::max(mag, static_cast<double>(std::abs(want[i])));
  }
  EXPECT_GT(mag, 0.1);
  EXPECT_LT(err / mag, 1e-5);
  EXPECT_EQ(par, got);
  if (cacheType != KVType::F32) {
    std::vector<uint8_t> ckvN = narrowBytes(ckvRaw, cacheType, ckvScale),
                         kpeN = narrowBytes(kpeRaw, cacheType, kpeScale);
    for (ThreadPool *p : {static_cast<ThreadPool *>(nullptr), pool}) {
      std::vector<float> narrow(got.size());
      ds::rt::kernels::mlaAttentionPacked(
          qn.data(), qp.data(), batch, seq, heads, dn, dr, ckvN.data(),
          kpeN.data(), cacheType, maxLen, rank, ukT.data(), uv.data(), dv,
          c.slots.data(), c.positions.data(), 0.3, narrow.data(), p, nullptr,
          nullptr, ckvScale, kpeScale);
      EXPECT_EQ(narrow, got) << (p ? "threads" : "serial");
    }
  }
  return got;
}

TEST(MLAPacked, EqualsPerRowForm) {
  ThreadPool pool(3);
  // Three heads, tiny ranks: the one-head-at-a-time paths.
  checkMlaPacked({3, 2, 3, 5, 2, 4, 7, 9, 4, {2, 0, 3}, {0, 1, 4, 5, 7, 8}},
                 &pool);
  // Ten heads (two runs of four that share the latents, two left), rank 40
  // (two 16-column chunks and 8 left), rope 6 (a scalar tail), contexts
  // over 64 rows (several row blocks), odd and even lengths.
  checkMlaPacked(
      {2, 3, 10, 8, 6, 8, 40, 150, 3, {2, 0}, {70, 71, 149, 0, 64, 65}}, &pool);
}

TEST(MLAPacked, NarrowCacheIsF32OfItsValues) {
  ThreadPool pool(3);
  for (KVType t : {KVType::BF16, KVType::F16, KVType::F8E4M3}) {
    checkMlaPacked({3, 2, 3, 5, 2, 4, 7, 9, 4, {2, 0, 3}, {0, 1, 4, 5, 7, 8}},
                   &pool, t);
    checkMlaPacked(
        {2, 3, 10, 8, 6, 8, 40, 150, 3, {2, 0}, {70, 71, 149, 0, 64, 65}},
        &pool, t);
    checkMlaPacked({1, 2, 10, 16, 8, 16, 512, 140, 3, {2}, {130, 131}}, &pool,
                   t);
  }
}

/// Attention's AVX-512 and AVX2 paths do the same arithmetic: with
/// DS_ATTENTION_DUMP=FILE this writes the outputs of attention and the
/// packed MLA over shapes that reach every path (GQA groups of 4 and 6,
/// head sizes with and without an 8-element tail, value widths of 64-column
/// blocks, 16-column blocks and scalar tails, prefill runs, several row
/// blocks); runtime/attention-isa.test runs it with and without
/// DS_CPU_AVX2=1 and requires the two files to be equal byte for byte.
TEST(Kernels, AttentionDumpForIsaComparison) {
  const char *path = std::getenv("DS_ATTENTION_DUMP");
  if (!path)
    GTEST_SKIP() << "DS_ATTENTION_DUMP not set";
  std::vector<float> dump;
  std::mt19937 rng(41);
  struct Shape {
    int64_t batch, seq, heads, kvHeads, d, dv;
  };
  ThreadPool pool(2);
  for (Shape sh : {Shape{1, 9, 32, 8, 128, 128}, Shape{2, 1, 24, 4, 20, 72},
                   Shape{1, 5, 8, 8, 64, 64}, Shape{2, 3, 12, 2, 128, 200}}) {
    const int64_t maxLen = 150, numSlots = 3;
    std::vector<float> q = randomVec(rng, sh.batch * sh.seq * sh.heads * sh.d);
    std::vector<float> k =
        randomVec(rng, numSlots * maxLen * sh.kvHeads * sh.d);
    std::vector<float> v =
        randomVec(rng, numSlots * maxLen * sh.kvHeads * sh.dv);
    std::vector<int64_t> slots{2, 0}, positions;
    for (int64_t b = 0; b < sh.batch; ++b)
      for (int64_t s = 0; s < sh.seq; ++s)
        positions.push_back(100 + 7 * b + s);
    std::vector<float> out(sh.batch * sh.seq * sh.heads * sh.dv);
    attention(q.data(), sh.batch, sh.seq, sh.heads, sh.d, k.data(), v.data(),
              maxLen, sh.kvHeads, sh.dv, slots.data(), positions.data(), 0, 0.1,
              out.data(), &pool);
    dump.insert(dump.end(), out.begin(), out.end());
  }
  for (const MlaPackedCase &c :
       {MlaPackedCase{1, 2, 10, 16, 8, 16, 512, 140, 3, {2}, {130, 131}},
        MlaPackedCase{
            2, 3, 10, 8, 6, 8, 40, 150, 3, {2, 0}, {70, 71, 149, 0, 64, 65}}}) {
    std::vector<float> out = checkMlaPacked(c, &pool);
    dump.insert(dump.end(), out.begin(), out.end());
  }
  FILE *f = std::fopen(path, "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(std::fwrite(dump.data(), sizeof(float), dump.size(), f),
            dump.size());
  std::fclose(f);
}

/// Attention over a bf16 / f16 cache is, bit for bit, attention over an f32
/// cache holding the same (rounded) values, serial and on workers, over
/// shapes that reach every path (GQA groups of 4 and 6, MHA, head sizes
/// with and without a tail, several row blocks, prefill runs, a window);
/// and it differs from attention over the unrounded values.
TEST(Kernels, AttentionNarrowCacheIsF32OfItsValues) {
  std::mt19937 rng(43);
  struct Shape {
    int64_t batch, seq, heads, kvHeads, d, dv, window;
  };
  ThreadPool pool(2);
  for (KVType t : {KVType::BF16, KVType::F16, KVType::F8E4M3})
    for (Shape sh :
         {Shape{1, 9, 32, 8, 128, 128, 0}, Shape{2, 1, 24, 4, 20, 72, 0},
          Shape{1, 5, 8, 8, 64, 64, 0}, Shape{2, 3, 12, 2, 128, 200, 0},
          Shape{2, 2, 4, 1, 13, 9, 40},
          // Decode with groups of 4 and 8 heads and whole 16-column strips
          // (101 and 108 rows): the AVX2 loops read the narrow rows in
          // place, widening in registers.
          Shape{2, 1, 16, 4, 128, 128, 0}, Shape{2, 1, 32, 4, 64, 48, 0}}) {
      SCOPED_TRACE(::testing::Message()
                   << "type " << static_cast<int>(t) << " heads " << sh.heads
                   << " d " << sh.d << " dv " << sh.dv);
      const int64_t maxLen = 150, numSlots = 3;
      std::vector<float> q =
          randomVec(rng, sh.batch * sh.seq * sh.heads * sh.d);
      std::vector<float> k =
          randomVec(rng, numSlots * maxLen * sh.kvHeads * sh.d, -3, 3);
      std::vector<float> v =
          randomVec(rng, numSlots * maxLen * sh.kvHeads * sh.dv, -3, 3);
      // e4m3: scales of 2^-3 and 2^-5 (values up to 24 and 96 of 448).
      const float kScale = t == KVType::F8E4M3 ? 0.125f : 1.0f,
                  vScale = t == KVType::F8E4M3 ? 0.03125f : 1.0f;
      std::vector<uint8_t> kn = narrowBytes(k, t, kScale),
                           vn = narrowBytes(v, t, vScale);
      std::vector<float> kr = roundedTo(k, t, kScale),
                         vr = roundedTo(v, t, vScale);
      std::vector<int64_t> slots{2, 0}, positions;
      for (int64_t b = 0; b < sh.batch; ++b)
        for (int64_t s = 0; s < sh.seq; ++s)
          positions.push_back(100 + 7 * b + s);
      const size_t n = sh.batch * sh.seq * sh.heads * sh.dv;
      std::vector<float> want(n), got(n), par(n), unrounded(n);
      attention(q.data(), sh.batch, sh.seq, sh.heads, sh.d, kr.data(),
                vr.data(), maxLen, sh.kvHeads, sh.dv, slots.data(),
                positions.data(), sh.window, 0.1, want.data());
      attention(q.data(), sh.batch, sh.seq, sh.heads, sh.d, kn.data(),
                vn.data(), t, maxLen, sh.kvHeads, sh.dv, slots.data(),
                positions.data(), sh.window, 0.1, got.data(), nullptr, kScale,
                vScale);
      attention(q.data(), sh.batch, sh.seq, sh.heads, sh.d, kn.data(),
                vn.data(), t, maxLen, sh.kvHeads, sh.dv, slots.data(),
                positions.data(), sh.window, 0.1, par.data(), &pool, kScale,
                vScale);
      attention(q.data(), sh.batch, sh.seq, sh.heads, sh.d, k.data(), v.data(),
                maxLen, sh.kvHeads, sh.dv, slots.data(), positions.data(),
                sh.window, 0.1, unrounded.data());
      EXPECT_EQ(got, want);
      EXPECT_EQ(par, want);
      EXPECT_NE(got, unrounded);
    }
}

/// A NaN in an e4m3 cache (0x7f / 0xff, only written for a NaN) reaches
/// the output as it does from an f32 cache: a NaN key element makes its
/// group's heads NaN throughout, a NaN value element its column, on the
/// paths that widen in registers (decode, 4 heads a group) and per block
/// (8 heads a group).
TEST(Kernels, AttentionF8CacheNaNsPropagate) {
  std::mt19937 rng(44);
  for (int64_t heads : {16, 32}) {
    const int64_t kvHeads = 4, d = 128, dv = 128, maxLen = 40,
                  group = heads / kvHeads;
    SCOPED_TRACE(::testing::Message() << "heads " << heads);
    std::vector<float> q = randomVec(rng, heads * d);
    std::vector<uint8_t> k = narrowBytes(randomVec(rng, maxLen * kvHeads * d),
                                         KVType::F8E4M3, 0.25f);
    std::vector<uint8_t> v = narrowBytes(randomVec(rng, maxLen * kvHeads * dv),
                                         KVType::F8E4M3, 0.25f);
    k[(7 * kvHeads + 1) * d + 93] = 0xff;  // key row 7, KV head 1
    v[(20 * kvHeads + 2) * dv + 5] = 0x7f; // value row 20, KV head 2
    std::vector<int64_t> slots{0}, positions{30};
    std::vector<float> out(heads * dv);
    attention(q.data(), 1, 1, heads, d, k.data(), v.data(), KVType::F8E4M3,
              maxLen, kvHeads, dv, slots.data(), positions.data(), 0, 0.1,
              out.data(), nullptr, 0.25f, 0.25f);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t c = 0; c < dv; ++c) {
        const bool nan = h / group == 1 || (h / group == 2 && c == 5);
        ASSERT_EQ(std::isnan(out[h * dv + c]), nan) << h << " " << c;
      }
  }
}

/// Prefill rows of a slot at consecutive positions run together (runs of
/// up to 8 rows share each key row); every row must come out bit for bit
/// as when it runs alone.
TEST(Kernels, AttentionPrefillRowsMatchSingleRows) {
  std::mt19937 rng(31);
  const int64_t batch = 2, seq = 13, heads = 8, kvHeads = 2, d = 24, dv = 16,
                maxLen = 64, numSlots = 3;
  std::vector<float> q = randomVec(rng, batch * seq * heads * d);
  std::vector<float> k = randomVec(rng, numSlots * maxLen * kvHeads * d);
  std::vector<float> v = randomVec(rng, numSlots * maxLen * kvHeads * dv);
  std::vector<int64_t> slots{2, 0}, positions;
  for (int64_t s = 0; s < seq; ++s) // consecutive: runs of 8 and 5
    positions.push_back(30 + s);
  for (int64_t s = 0; s < seq; ++s) // with a gap and a repeat: other runs
    positions.push_back(s < 6 ? 40 + s : s == 6 ? 45 : 50 + s);
  std::vector<float> all(batch * seq * heads * dv), one(heads * dv);
  ThreadPool pool(2);
  for (ThreadPool *p : {static_cast<ThreadPool *>(nullptr), &pool}) {
    attention(q.data(), batch, seq, heads, d, k.data(), v.data(), maxLen,
              kvHeads, dv, slots.data(), positions.data(), 0, 0.2, all.data(),
              p);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t s = 0; s < seq; ++s) {
        int64_t row = b * seq + s;
        attention(q.data() + row * heads * d, 1, 1, heads, d, k.data(),
                  v.data(), maxLen, kvHeads, dv, &slots[b], &positions[row], 0,
                  0.2, one.data());
        ASSERT_EQ(0, std::memcmp(one.data(), all.data() + row * heads * dv,
                                 one.size() * sizeof(float)))
            << "row " << row << (p ? " (threads)" : "");
      }
  }
}

/// A long prefill (runs of up to 32 rows, 8 heads sharing each KV head: the
/// 8-head AVX-512 loop) over several key blocks: rows of a run that end
/// before a block skip it, and every row still comes out bit for bit as
/// when it runs alone (decode), serially and on workers.
TEST(Kernels, AttentionLongPrefillMatchesSingleRows) {
  std::mt19937 rng(32);
  const int64_t seq = 100, heads = 16, kvHeads = 2, d = 128, dv = 128,
                maxLen = 128;
  std::vector<float> q = randomVec(rng, seq * heads * d);
  std::vector<float> k = randomVec(rng, maxLen * kvHeads * d);
  std::vector<float> v = randomVec(rng, maxLen * kvHeads * dv);
  std::vector<int64_t> slots{0}, positions(seq);
  std::iota(positions.begin(), positions.end(), 5);
  std::vector<float> all(seq * heads * dv), one(heads * dv);
  ThreadPool pool(2);
  for (ThreadPool *p : {static_cast<ThreadPool *>(nullptr), &pool}) {
    attention(q.data(), 1, seq, heads, d, k.data(), v.data(), maxLen, kvHeads,
              dv, slots.data(), positions.data(), 0, 0.09, all.data(), p);
    for (int64_t row = 0; row < seq; ++row) {
      attention(q.data() + row * heads * d, 1, 1, heads, d, k.data(), v.data(),
                maxLen, kvHeads, dv, slots.data(), &positions[row], 0, 0.09,
                one.data());
      ASSERT_EQ(0, std::memcmp(one.data(), all.data() + row * heads * dv,
                               one.size() * sizeof(float)))
          << "row " << row << (p ? " (threads)" : "");
    }
  }
  // And the reference agrees.
  AttnCase c{1, seq, heads, kvHeads, d, dv, 1, maxLen, 0, slots, positions};
  checkAttention(c, 33, &pool);
}

TEST(Kernels, AttentionMhaLongRows) {
  // MHA (no shared KV heads: the per-head paths) with d = 24 (one
  // 16-column chunk and 8 left) over several row blocks.
  ThreadPool pool(2);
  checkAttention({2, 2, 6, 6, 24, 24, 2, 300, 0, {1, 0}, {290, 291, 65, 200}},
                 30, &pool);
}
} // namespace
