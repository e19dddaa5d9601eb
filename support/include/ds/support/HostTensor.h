//===- HostTensor.h - a dense tensor in host memory -------------*- C++ -*-===//
//
// The tensor type that crosses ds APIs (interpreter inputs and outputs,
// .npy files, and later the runtime): a dtype, a shape and row-major bytes.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_HOSTTENSOR_H
#define DS_SUPPORT_HOSTTENSOR_H

#include "ds/support/DType.h"

#include "absl/status/statusor.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ds {

struct HostTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape)
      : dtype(dtype), shape(std::move(shape)) {
    bytes.resize(static_cast<size_t>(numElements()) * dtypeSize(dtype));
  }

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  template <typename T> T *data() {
    return reinterpret_cast<T *>(bytes.data());
  }
  template <typename T> const T *data() const {
    return reinterpret_cast<const T *>(bytes.data());
  }

  static HostTensor fromFloats(std::vector<int64_t> shape,
                               const std::vector<float> &values) {
    HostTensor t(DType::F32, std::move(shape));
    if (!t.bytes.empty())
      std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
  }
  static HostTensor fromInts(std::vector<int64_t> shape,
                             const std::vector<int64_t> &values) {
    HostTensor t(DType::I64, std::move(shape));
    if (!t.bytes.empty())
      std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
    return t;
  }
  /// Every element as f32 (float dtypes converted, integers cast).
  std::vector<float> toFloats() const;
  /// Every element as i64 (integer dtypes; floats truncated).
  std::vector<int64_t> toInts() const;
  std::string shapeString() const;
};

/// Reads a NumPy .npy file (format 1.0-3.0, little-endian, C order) of
/// f64/f32/f16/i64/i32/i16/i8/u8/bool.
absl::StatusOr<HostTensor> readNpy(const std::string &path);
/// Writes a .npy file (format 1.0) atomically. BF16 and F8 are written as
/// f32 since NumPy has no such dtypes.
absl::Status writeNpy(const std::string &path, const HostTensor &tensor);

} // namespace ds

#endif // DS_SUPPORT_HOSTTENSOR_H
