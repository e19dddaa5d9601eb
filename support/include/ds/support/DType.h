//===- DType.h - element types shared by ds file formats --------*- C++ -*-===//
//
// The element types that ds reads and writes in checkpoints, .npy files and
// host tensors, their sizes and names, and exact conversions between the
// narrow float formats (f16, bf16, f8 e4m3) and f32. No MLIR or LLVM here:
// the runtime and the compiler share this header.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_DTYPE_H
#define DS_SUPPORT_DTYPE_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ds {

enum class DType : uint8_t {
  F64,
  F32,
  F16,
  BF16,
  F8E4M3,
  I64,
  I32,
  I16,
  I8,
  U8,
  Bool,
};

/// Bytes per element.
size_t dtypeSize(DType dtype);

/// The safetensors spelling ("F32", "BF16", "F8_E4M3", "I64", ...).
std::string_view dtypeName(DType dtype);

/// Parses a safetensors dtype name; std::nullopt for unknown names.
std::optional<DType> parseDType(std::string_view name);

bool isFloatDType(DType dtype);

float halfToFloat(uint16_t bits);
float bf16ToFloat(uint16_t bits);
/// OCP FP8 E4M3 (finite-only "fn" variant used by DeepSeek-V3 and torch's
/// float8_e4m3fn): bias 7, no infinities, 0x7f/0xff are NaN.
float f8e4m3ToFloat(uint8_t bits);

/// Round-to-nearest-even conversions from f32.
uint16_t floatToHalf(float value);
uint16_t floatToBF16(float value);
/// Rounds to the nearest float8 e4m3fn value (ties to even), saturating at
/// +-448 (the format has no infinity); NaN maps to NaN.
uint8_t floatToF8E4M3(float value);

/// Rounds `value` to the precision of `dtype` and back (identity for f32 and
/// wider); used to model storage in a narrower float type.
float roundToDType(float value, DType dtype);

} // namespace ds

#endif // DS_SUPPORT_DTYPE_H
