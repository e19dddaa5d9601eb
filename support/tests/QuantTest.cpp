//===- QuantTest.cpp - block quantization
//----------------------------------===//

#include "ds/support/Quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace ds;

namespace {

TEST(Float8, EveryFiniteCodeRoundTrips) {
  for (int bits = 0; bits < 256; ++bits) {
    float v = f8e4m3ToFloat(static_cast<uint8_t>(bits));
    if (std::isnan(v))
      continue;
    uint8_t back = floatToF8E4M3(v);
    // +0 and -0 are distinct codes; every other value has one code.
    EXPECT_EQ(f8e4m3ToFloat(back), v) << "code " << bits;
    if (v != 0.0f)
      EXPECT_EQ(back, bits) << "code " << bits;
  }
}

TEST(Float8, RoundsToNearestEvenAndSaturates) {
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(448.0f)), 448.0f);
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(1000.0f)), 448.0f);
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(-1000.0f)), -448.0f);
  // 1.0625 lies halfway between 1.0 and 1.125: ties go to the even 1.0.
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(1.0625f)), 1.0f);
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(1.07f)), 1.125f);
  // Subnormals are multiples of 2^-9.
  EXPECT_EQ(f8e4m3ToFloat(floatToF8E4M3(std::ldexp(3.2f, -9))),
            std::ldexp(3.0f, -9));
  EXPECT_TRUE(std::isnan(f8e4m3ToFloat(floatToF8E4M3(NAN))));
}

TEST(Quant, ScaleShapes) {
  EXPECT_EQ(scaleShape({64, 300}, {1, 0}), (std::vector<int64_t>{64, 1}));
  EXPECT_EQ(scaleShape({64, 300}, {1, 128}), (std::vector<int64_t>{64, 3}));
  EXPECT_EQ(scaleShape({300, 300}, {128, 128}), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(scaleShape({4, 300, 64}, {1, 128, 128}),
            (std::vector<int64_t>{4, 3, 1}));
}

TEST(Quant, Int8PerChannelByHand) {
  // Row 0 absmax 127 -> scale 1; row 1 absmax 2.54 -> scale 0.02.
  std::vector<float> x = {127.0f, -63.4f, 0.6f, 2.54f, -1.0f, 0.01f};
  QuantizedTensor q = quantize(x.data(), {2, 3}, {QStorage::I8, {1, 0}});
  ASSERT_EQ(q.scales.size(), 2u);
  EXPECT_FLOAT_EQ(q.scales[0], 1.0f);
  EXPECT_FLOAT_EQ(q.scales[1], 0.02f);
  EXPECT_EQ(q.values, (std::vector<float>{127, -63, 1, 127, -50, 0}));
  std::vector<float> d = dequantize(q);
  EXPECT_FLOAT_EQ(d[1], -63.0f);
  EXPECT_FLOAT_EQ(d[4], -1.0f);
}

TEST(Quant, AsymmetricInt4HoldsZeroAndRange) {
  std::vector<float> x = {0.0f, 1.5f, 3.0f, 0.2f};
  QuantizedTensor q = quantize(x.data(), {1, 4}, {QStorage::U4, {1, 0}});
  ASSERT_EQ(q.zeros.size(), 1u);
  EXPECT_FLOAT_EQ(q.scales[0], 0.2f);
  EXPECT_EQ(q.zeros[0], 0.0f);
  std::vector<float> d = dequantize(q);
  EXPECT_FLOAT_EQ(d[0], 0.0f);
  EXPECT_FLOAT_EQ(d[2], 3.0f);
  for (float v : q.values)
    EXPECT_TRUE(v >= 0 && v <= 15);
}

TEST(Quant, PackedFourBitEncodingRoundTrips) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(6 * 7); // odd row length: the last byte is half used
  for (float &v : x)
    v = normal(rng);
  for (QStorage s : {QStorage::I4, QStorage::U4, QStorage::I8, QStorage::U8,
                     QStorage::F8E4M3}) {
    QuantizedTensor q = quantize(x.data(), {6, 7}, {s, {1, 4}});
    std::vector<uint8_t> bytes = encodeValues(q);
    std::vector<int64_t> sshape = storageShape({6, 7}, s);
    size_t expected = sshape[0] * sshape[1] * dtypeSize(storageDType(s));
    ASSERT_EQ(bytes.size(), expected) << qstorageName(s);
    EXPECT_EQ(decodeValues(bytes.data(), {6, 7}, s), q.values)
        << qstorageName(s);
  }
  // i4 nibble order: element 0 low, element 1 high, two's complement.
  QuantizedTensor q;
  q.shape = {1, 2};
  q.scheme = {QStorage::I4, {1, 0}};
  q.values = {-1.0f, 3.0f};
  EXPECT_EQ(encodeValues(q), (std::vector<uint8_t>{0x3f}));
}

TEST(Quant, ErrorShrinksWithPrecisionAndClipSearchHelps) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(64 * 256);
  for (float &v : x)
    v = normal(rng);
  auto relErr = [&](const QScheme &s, QuantizeOptions o = {}) {
    std::vector<float> d = dequantize(quantize(x.data(), {64, 256}, s, o));
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      num += (d[i] - x[i]) * (d[i] - x[i]);
      den += x[i] * x[i];
    }
    return std::sqrt(num / den);
  };
  double i8 = relErr({QStorage::I8, {1, 0}});
  double f8 = relErr({QStorage::F8E4M3, {128, 128}});
  double i4 = relErr({QStorage::I4, {1, 128}});
  QuantizeOptions clip;
  clip.searchClip = true;
  double i4clip = relErr({QStorage::I4, {1, 128}}, clip);
  // Expected magnitudes for Gaussian data: int8 ~0.7%, e4m3 ~2-3%, int4 ~10%.
  EXPECT_LT(i8, 0.01);
  EXPECT_GT(f8, i8);
  EXPECT_LT(f8, 0.04);
  EXPECT_GT(i4, f8);
  EXPECT_LT(i4, 0.15);
  EXPECT_LT(i4clip, i4);
}

TEST(Quant, StaticScaleClampsOutliers) {
  std::vector<float> x = {0.5f, 100.0f, -100.0f};
  QuantizedTensor q =
      quantizeWithScale(x.data(), {1, 3}, {QStorage::I8, {0, 0}}, 0.5f);
  EXPECT_EQ(q.values, (std::vector<float>{1, 127, -128}));
}

} // namespace

namespace {

TEST(Sparse24, KeepsTheTwoLargestOfEveryFourByHand) {
  // Row of K = 8: groups {1, -5, 2, 4} and {0, 0, 3, 0}.
  std::vector<float> x = {1, -5, 2, 4, 0, 0, 3, 0};
  Sparse24 s = compress24(x.data(), 1, 8);
  EXPECT_EQ(s.values, (std::vector<float>{-5, 4, 0, 3}));
  // Group 0 keeps indices 1 and 3 (1 | 3 << 2 = 0xd); group 1 keeps 0 (a tie
  // among zeros goes to the lower index) and 2 (0 | 2 << 2 = 0x8).
  ASSERT_EQ(s.meta.size(), 1u);
  EXPECT_EQ(s.meta[0], 0x8d);
  EXPECT_EQ(decompress24(s.values.data(), s.meta.data(), 1, 8),
            (std::vector<float>{0, -5, 0, 4, 0, 0, 3, 0}));
}

TEST(Sparse24, HalfTheWeightsSurviveAndKeepTheirValues) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const int64_t rows = 5, k = 12; // K/4 odd: the last meta byte is half used
  std::vector<float> x(rows * k);
  for (float &v : x)
    v = normal(rng);
  Sparse24 s = compress24(x.data(), rows, k);
  EXPECT_EQ(s.meta.size(), static_cast<size_t>(rows * 2));
  std::vector<float> d = decompress24(s.values.data(), s.meta.data(), rows, k);
  for (int64_t g = 0; g < rows * k / 4; ++g) {
    int kept = 0;
    float minKept = INFINITY, maxDropped = 0;
    for (int i = 0; i < 4; ++i) {
      float orig = x[g * 4 + i], got = d[g * 4 + i];
      if (got != 0.0f) {
        EXPECT_EQ(got, orig);
        ++kept;
        minKept = std::min(minKept, std::fabs(orig));
      } else {
        maxDropped = std::max(maxDropped, std::fabs(orig));
      }
    }
    EXPECT_EQ(kept, 2);
    EXPECT_GE(minKept, maxDropped);
  }
}

} // namespace
