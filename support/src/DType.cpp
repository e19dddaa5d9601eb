//===- DType.cpp - element types shared by ds file formats ----------------===//
//
// Sizes, names and float conversions for ds::DType.
//
//===----------------------------------------------------------------------===//

#include "ds/support/DType.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace ds {

size_t dtypeSize(DType dtype) {
  switch (dtype) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
  case DType::I16:
    return 2;
  case DType::F8E4M3:
  case DType::I8:
  case DType::U8:
  case DType::Bool:
    return 1;
  }
  return 0;
}

std::string_view dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F64:
    return "F64";
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::F8E4M3:
    return "F8_E4M3";
  case DType::I64:
    return "I64";
  case DType::I32:
    return "I32";
  case DType::I16:
    return "I16";
  case DType::I8:
    return "I8";
  case DType::U8:
    return "U8";
  case DType::Bool:
    return "BOOL";
  }
  return "?";
}

std::optional<DType> parseDType(std::string_view name) {
  for (DType d :
       {DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8E4M3,
        DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::Bool})
    if (dtypeName(d) == name)
      return d;
  return std::nullopt;
}

bool isFloatDType(DType dtype) {
  switch (dtype) {
  case DType::F64:
  case DType::F32:
  case DType::F16:
  case DType::BF16:
  case DType::F8E4M3:
    return true;
  default:
    return false;
  }
}

static float bitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

static uint32_t floatToBits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24.
    float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -v : v;
  }
  if (exponent == 0x1f)
    return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  return bitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

float bf16ToFloat(uint16_t bits) {
  return bitsToFloat(static_cast<uint32_t>(bits) << 16);
}

float f8e4m3ToFloat(uint8_t bits) {
  bool negative = bits & 0x80;
  uint32_t exponent = (bits >> 3) & 0xf;
  uint32_t mantissa = bits & 0x7;
  float v;
  if (exponent == 0xf && mantissa == 0x7)
    v = std::numeric_limits<float>::quiet_NaN();
  else if (exponent == 0)
    v = std::ldexp(static_cast<float>(mantissa), -9); // subnormal: m/8 * 2^-6
  else
    v = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f,
                   static_cast<int>(exponent) - 7);
  return negative ? -v : v;
}

uint8_t floatToF8E4M3(float value) {
  if (std::isnan(value))
    return 0x7f;
  uint8_t sign = std::signbit(value) ? 0x80 : 0;
  float a = std::fabs(value);
  if (std::isinf(a))
    return sign | 0x7e; // saturate: e4m3fn has no infinity
  if (a < 0.015625f) {  // below the smallest normal 2^-6: steps of 2^-9
    auto m = static_cast<int>(std::nearbyint(std::ldexp(a, 9)));
    return sign | static_cast<uint8_t>(m); // m == 8 encodes 2^-6 exactly
  }
  int e;
  float frac = std::frexp(a, &e); // a = frac * 2^e, frac in [0.5, 1)
  int exponent = e - 1;           // a = (2 frac) 2^exponent
  auto m = static_cast<int>(std::nearbyint((2.0f * frac - 1.0f) * 8.0f));
  if (m == 8) {
    m = 0;
    ++exponent;
  }
  int field = exponent + 7;
  if (field > 15 || (field == 15 && m > 6))
    return sign | 0x7e; // 448
  return sign | static_cast<uint8_t>(field << 3 | m);
}

uint16_t floatToBF16(float value) {
  uint32_t bits = floatToBits(value);
  if (std::isnan(value))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

uint16_t floatToHalf(float value) {
  uint32_t bits = floatToBits(value);
  uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  uint32_t absBits = bits & 0x7fffffffu;
  if (absBits >= 0x7f800000u) // inf or nan
    return sign | 0x7c00 | (absBits > 0x7f800000u ? 0x200 : 0);
  if (absBits >= 0x477ff000u) // rounds to >= 65520: overflow to inf
    return sign | 0x7c00;
  if (absBits < 0x38800000u) {
    // Subnormal or zero in f16: value / 2^-24, rounded to nearest even.
    float mag = bitsToFloat(absBits);
    float scaled = std::nearbyint(std::ldexp(mag, 24));
    return sign | static_cast<uint16_t>(scaled);
  }
  uint32_t mantissa = absBits & 0x7fffff;
  uint32_t exponent = (absBits >> 23) - 112;
  uint32_t half = (exponent << 10) | (mantissa >> 13);
  uint32_t rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
    ++half;
  return sign | static_cast<uint16_t>(half);
}

float roundToDType(float value, DType dtype) {
  switch (dtype) {
  case DType::F16:
    return halfToFloat(floatToHalf(value));
  case DType::BF16:
    return bf16ToFloat(floatToBF16(value));
  case DType::F8E4M3:
    return f8e4m3ToFloat(floatToF8E4M3(value));
  default:
    return value;
  }
}

} // namespace ds
