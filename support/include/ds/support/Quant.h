//===- Quant.h - block quantization shared by compiler and runtime -*- C++
//-*-===//
//
// One description covers every scheme ds uses: a tensor is cut into blocks
// (`block[d]` elements along axis d, 0 meaning the whole axis) and each block
// has one f32 scale (and, for unsigned storage, one integer zero point):
//
//   value = (q - zero) * scale
//
//   int8 per output channel   [N, K]      block [1, 0]       storage i8
//   int4 group-wise g          [N, K]      block [1, g]       storage i4 / u4
//   FP8 DeepSeek-V3 weights    [N, K]      block [128, 128]   storage f8 e4m3
//   per-token activations      [.., T, K]  block [1, .., 0]   storage i8
//   per-token-group (1x128)    [.., T, K]  block [1, .., 128] storage f8 e4m3
//
// Scales are absmax / qmax (symmetric) or (max - min) / (2^bits - 1) with the
// zero point round(-min / scale) (asymmetric; the range always holds 0),
// optionally with the range clipped to minimize the squared error.
// Values are x / scale rounded to nearest-even and clamped (integers) or
// rounded to e4m3 with saturation (FP8).
//
// Checkpoint encoding: i8 as I8, u8 as U8, f8 as F8_E4M3, 4-bit values as U8
// with two values a byte along the last axis (element 2j in the low nibble,
// 2j+1 in the high nibble; i4 in two's complement), scales as F32 with shape
// ceil(shape / block), zero points as U8 of the same shape.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_QUANT_H
#define DS_SUPPORT_QUANT_H

#include "ds/support/DType.h"

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace ds {

enum class QStorage : uint8_t { I8, U8, I4, U4, F8E4M3 };

std::string_view qstorageName(QStorage storage);
/// Parses "i8", "u8", "i4", "u4", "f8e4m3".
std::optional<QStorage> parseQStorage(std::string_view name);
/// Unsigned storage carries zero points.
bool isUnsigned(QStorage storage);
float qmin(QStorage storage);
float qmax(QStorage storage);

struct QScheme {
  QStorage storage = QStorage::I8;
  /// One entry per axis; 0 = the whole axis.
  std::vector<int64_t> block;
};

/// The block size along each axis of `shape` (0 entries resolved).
std::vector<int64_t> resolvedBlock(const std::vector<int64_t> &shape,
                                   const std::vector<int64_t> &block);
/// ceil(shape / block) per axis: the shape of the scales.
std::vector<int64_t> scaleShape(const std::vector<int64_t> &shape,
                                const std::vector<int64_t> &block);

/// A quantized tensor in logical form: `values` holds q (exact small
/// integers, or e4m3 values) as floats.
struct QuantizedTensor {
  std::vector<int64_t> shape;
  QScheme scheme;
  std::vector<float> values;
  std::vector<float> scales;
  std::vector<float> zeros; // empty for signed storage
};

struct QuantizeOptions {
  /// Per block, shrink the range by the ratio in {1, 0.95, ..., 0.5} that
  /// gives the least squared error (RTN with clipping search, as llama.cpp
  /// and AWQ's clip step do); worth it for 4-bit weights. Off: absmax.
  bool searchClip = false;
  /// Scales rounded to f16 (to nearest even; kept in f16's range, at
  /// least its smallest subnormal) before the values are quantized with
  /// them, so that a checkpoint can store them as f16 exactly.
  bool halfScales = false;
};

/// Quantizes `x` (row-major, `shape`) with dynamic (absmax / min-max) scales.
QuantizedTensor quantize(const float *x, const std::vector<int64_t> &shape,
                         const QScheme &scheme,
                         const QuantizeOptions &options = {});
/// The same with one given scale for every block (static, symmetric).
QuantizedTensor quantizeWithScale(const float *x,
                                  const std::vector<int64_t> &shape,
                                  const QScheme &scheme, float scale);
/// (q - zero) * scale for every element.
std::vector<float> dequantize(const QuantizedTensor &q);

/// The checkpoint dtype and shape that store the values of `q`.
DType storageDType(QStorage storage);
std::vector<int64_t> storageShape(const std::vector<int64_t> &shape,
                                  QStorage storage);
/// Encodes the values of `q` as the checkpoint bytes.
std::vector<uint8_t> encodeValues(const QuantizedTensor &q);
/// Decodes `count = product(shape)` values from checkpoint bytes (whose
/// size must be product(storageShape) * dtypeSize).
std::vector<float> decodeValues(const uint8_t *bytes,
                                const std::vector<int64_t> &shape,
                                QStorage storage);

//===----------------------------------------------------------------------===//
// 2:4 structured sparsity
//===----------------------------------------------------------------------===//
//
// Along the last axis (K, a multiple of 4), every group of 4 keeps its two
// largest magnitudes (ties: the lower index). Compressed form, per row:
// `values` [K/2] (the kept elements in order) and `meta` [ceil(K/8)] bytes:
// each group has two 2-bit in-group indices (first in bits 0-1, second in
// bits 2-3), group 2j in a byte's low nibble and 2j+1 in its high nibble --
// the metadata layout of sparse tensor cores.

struct Sparse24 {
  std::vector<float> values;
  std::vector<uint8_t> meta;
};

/// Prunes and compresses `rows` rows of `k` values (k % 4 == 0).
Sparse24 compress24(const float *x, int64_t rows, int64_t k);
/// The dense rows again (pruned elements are zero).
std::vector<float> decompress24(const float *values, const uint8_t *meta,
                                int64_t rows, int64_t k);

} // namespace ds

#endif // DS_SUPPORT_QUANT_H
