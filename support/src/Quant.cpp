//===- Quant.cpp - block quantization
//--------------------------------------===//

#include "ds/support/Quant.h"

#include <algorithm>
#include <cmath>

namespace ds {

std::string_view qstorageName(QStorage storage) {
  switch (storage) {
  case QStorage::I8:
    return "i8";
  case QStorage::U8:
    return "u8";
  case QStorage::I4:
    return "i4";
  case QStorage::U4:
    return "u4";
  case QStorage::F8E4M3:
    return "f8e4m3";
  }
  return "?";
}

std::optional<QStorage> parseQStorage(std::string_view name) {
  for (QStorage s : {QStorage::I8, QStorage::U8, QStorage::I4, QStorage::U4,
                     QStorage::F8E4M3})
    if (qstorageName(s) == name)
      return s;
  return std::nullopt;
}

bool isUnsigned(QStorage storage) {
  return storage == QStorage::U8 || storage == QStorage::U4;
}

float qmin(QStorage storage) {
  switch (storage) {
  case QStorage::I8:
    return -128.0f;
  case QStorage::I4:
    return -8.0f;
  case QStorage::F8E4M3:
    return -448.0f;
  default:
    return 0.0f;
  }
}

float qmax(QStorage storage) {
  switch (storage) {
  case QStorage::I8:
    return 127.0f;
  case QStorage::U8:
    return 255.0f;
  case QStorage::I4:
    return 7.0f;
  case QStorage::U4:
    return 15.0f;
  case QStorage::F8E4M3:
    return 448.0f;
  }
  return 0.0f;
}

std::vector<int64_t> resolvedBlock(const std::vector<int64_t> &shape,
                                   const std::vector<int64_t> &block) {
  std::vector<int64_t> out(shape.size());
  for (size_t d = 0; d < shape.size(); ++d)
    out[d] = block[d] == 0 ? std::max<int64_t>(shape[d], 1) : block[d];
  return out;
}

std::vector<int64_t> scaleShape(const std::vector<int64_t> &shape,
                                const std::vector<int64_t> &block) {
  std::vector<int64_t> b = resolvedBlock(shape, block), out(shape.size());
  for (size_t d = 0; d < shape.size(); ++d)
    out[d] = shape[d] / b[d] + (shape[d] % b[d] != 0); // no overflow
  return out;
}

namespace {

int64_t product(const std::vector<int64_t> &v) {
  int64_t n = 1;
  for (int64_t d : v)
    n *= d;
  return n;
}

/// Calls f(element, block) for every element in row-major order. The block
/// index of a row's prefix is computed once per row and steps once per
/// block along it (real-width weights have billions of elements: a division
/// per element and axis was most of ds-quantize's time).
template <typename F>
void forEachBlockIndex(const std::vector<int64_t> &shape,
                       const std::vector<int64_t> &block, F f) {
  std::vector<int64_t> b = resolvedBlock(shape, block);
  std::vector<int64_t> sshape = scaleShape(shape, block);
  const size_t rank = shape.size();
  if (rank == 0) {
    f(0, 0);
    return;
  }
  const int64_t last = shape[rank - 1];
  if (last <= 0 || product(shape) == 0)
    return;
  const int64_t blockLast = std::max<int64_t>(b[rank - 1], 1);
  const int64_t rows = product(shape) / last;
  std::vector<int64_t> idx(rank - 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t s = 0;
    for (size_t d = 0; d + 1 < rank; ++d)
      s = s * sshape[d] + idx[d] / b[d];
    s *= sshape[rank - 1];
    const int64_t base = r * last;
    for (int64_t c = 0; c < last; c += blockLast, ++s) {
      const int64_t end = std::min(last, c + blockLast);
      for (int64_t j = c; j < end; ++j)
        f(base + j, s);
    }
    for (size_t d = rank - 1; d-- > 0;) {
      if (++idx[d] < shape[d])
        break;
      idx[d] = 0;
    }
  }
}

float roundValue(float v, QStorage storage) {
  if (storage == QStorage::F8E4M3)
    return f8e4m3ToFloat(floatToF8E4M3(v));
  if (std::isnan(v))
    return 0.0f; // integers have no NaN
  return std::clamp(std::nearbyint(v), qmin(storage), qmax(storage));
}

} // namespace

QuantizedTensor quantize(const float *x, const std::vector<int64_t> &shape,
                         const QScheme &scheme,
                         const QuantizeOptions &options) {
  QuantizedTensor q;
  q.shape = shape;
  q.scheme = scheme;
  int64_t blocks = product(scaleShape(shape, scheme.block));
  bool asym = isUnsigned(scheme.storage);
  std::vector<float> lo(blocks, 0.0f), hi(blocks, 0.0f);
  forEachBlockIndex(shape, scheme.block, [&](int64_t i, int64_t s) {
    lo[s] = std::min(lo[s], x[i]);
    hi[s] = std::max(hi[s], x[i]);
  });
  q.scales.resize(blocks);
  if (asym)
    q.zeros.resize(blocks);
  // The scale (and zero point) of block s when its range is shrunk by alpha.
  auto setScale = [&](int64_t s, float alpha) {
    float l = lo[s] * alpha, h = hi[s] * alpha;
    float scale = asym ? (h - l) / qmax(scheme.storage)
                       : std::max(-l, h) / qmax(scheme.storage);
    if (!(scale > 0.0f) || !std::isfinite(scale))
      scale = 1.0f;
    if (options.halfScales)
      scale = std::clamp(halfToFloat(floatToHalf(scale)), 0x1p-24f, 65504.0f);
    q.scales[s] = scale;
    if (asym)
      q.zeros[s] =
          std::clamp(std::nearbyint(-l / scale), 0.0f, qmax(scheme.storage));
  };
  auto quantizeOne = [&](float v, int64_t s) {
    float r = v / q.scales[s];
    if (asym)
      return std::isnan(r) ? q.zeros[s]
                           : std::clamp(std::nearbyint(r) + q.zeros[s], 0.0f,
                                        qmax(scheme.storage));
    return roundValue(r, scheme.storage);
  };
  std::vector<float> best(blocks, 1.0f);
  if (options.searchClip) {
    // Keep, per block, the clipping ratio with the least squared error.
    std::vector<double> bestErr(blocks, -1.0), err(blocks);
    for (int step = 0; step <= 10; ++step) {
      float alpha = 1.0f - 0.05f * static_cast<float>(step);
      for (int64_t s = 0; s < blocks; ++s)
        setScale(s, alpha);
      std::fill(err.begin(), err.end(), 0.0);
      forEachBlockIndex(shape, scheme.block, [&](int64_t i, int64_t s) {
        float zero = asym ? q.zeros[s] : 0.0f;
        double d = (quantizeOne(x[i], s) - zero) * q.scales[s] - x[i];
        err[s] += d * d;
      });
      for (int64_t s = 0; s < blocks; ++s)
        if (bestErr[s] < 0.0 || err[s] < bestErr[s]) {
          bestErr[s] = err[s];
          best[s] = alpha;
        }
    }
  }
  for (int64_t s = 0; s < blocks; ++s)
    setScale(s, best[s]);
  q.values.resize(product(shape));
  forEachBlockIndex(shape, scheme.block, [&](int64_t i, int64_t s) {
    q.values[i] = quantizeOne(x[i], s);
  });
  return q;
}

QuantizedTensor quantizeWithScale(const float *x,
                                  const std::vector<int64_t> &shape,
                                  const QScheme &scheme, float scale) {
  QuantizedTensor q;
  q.shape = shape;
  q.scheme = scheme;
  if (!(scale > 0.0f) || !std::isfinite(scale))
    scale = 1.0f;
  q.scales.assign(product(scaleShape(shape, scheme.block)), scale);
  q.values.resize(product(shape));
  for (size_t i = 0; i < q.values.size(); ++i)
    q.values[i] = roundValue(x[i] / scale, scheme.storage);
  return q;
}

std::vector<float> dequantize(const QuantizedTensor &q) {
  std::vector<float> out(q.values.size());
  forEachBlockIndex(q.shape, q.scheme.block, [&](int64_t i, int64_t s) {
    float zero = q.zeros.empty() ? 0.0f : q.zeros[s];
    out[i] = (q.values[i] - zero) * q.scales[s];
  });
  return out;
}

DType storageDType(QStorage storage) {
  switch (storage) {
  case QStorage::I8:
    return DType::I8;
  case QStorage::F8E4M3:
    return DType::F8E4M3;
  default:
    return DType::U8;
  }
}

static bool isFourBit(QStorage storage) {
  return storage == QStorage::I4 || storage == QStorage::U4;
}

std::vector<int64_t> storageShape(const std::vector<int64_t> &shape,
                                  QStorage storage) {
  std::vector<int64_t> out = shape;
  if (isFourBit(storage) && !out.empty())
    out.back() = (out.back() + 1) / 2;
  return out;
}

std::vector<uint8_t> encodeValues(const QuantizedTensor &q) {
  QStorage st = q.scheme.storage;
  if (!isFourBit(st)) {
    std::vector<uint8_t> out(q.values.size());
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = st == QStorage::F8E4M3
                   ? floatToF8E4M3(q.values[i])
                   : static_cast<uint8_t>(static_cast<int>(q.values[i]));
    return out;
  }
  int64_t k = q.shape.empty() ? 1 : q.shape.back();
  int64_t rows = k ? static_cast<int64_t>(q.values.size()) / k : 0;
  int64_t packed = (k + 1) / 2;
  std::vector<uint8_t> out(rows * packed, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      auto nibble =
          static_cast<uint8_t>(static_cast<int>(q.values[r * k + j]) & 0xf);
      out[r * packed + j / 2] |= j % 2 ? nibble << 4 : nibble;
    }
  return out;
}

std::vector<float> decodeValues(const uint8_t *bytes,
                                const std::vector<int64_t> &shape,
                                QStorage storage) {
  int64_t n = product(shape);
  std::vector<float> out(n);
  if (!isFourBit(storage)) {
    for (int64_t i = 0; i < n; ++i)
      out[i] = storage == QStorage::F8E4M3 ? f8e4m3ToFloat(bytes[i])
               : storage == QStorage::I8
                   ? static_cast<float>(static_cast<int8_t>(bytes[i]))
                   : static_cast<float>(bytes[i]);
    return out;
  }
  int64_t k = shape.empty() ? 1 : shape.back();
  int64_t packed = (k + 1) / 2;
  int64_t rows = k ? n / k : 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < k; ++j) {
      uint8_t byte = bytes[r * packed + j / 2];
      int v = j % 2 ? byte >> 4 : byte & 0xf;
      if (storage == QStorage::I4 && v >= 8)
        v -= 16;
      out[r * k + j] = static_cast<float>(v);
    }
  return out;
}

Sparse24 compress24(const float *x, int64_t rows, int64_t k) {
  Sparse24 out;
  int64_t metaPerRow = (k / 4 + 1) / 2;
  out.values.resize(rows * k / 2);
  out.meta.assign(rows * metaPerRow, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < k / 4; ++g) {
      const float *v = x + r * k + g * 4;
      // The two largest magnitudes; ties keep the lower index.
      int first = 0;
      for (int i = 1; i < 4; ++i)
        if (std::fabs(v[i]) > std::fabs(v[first]))
          first = i;
      int second = first == 0 ? 1 : 0;
      for (int i = 0; i < 4; ++i)
        if (i != first && std::fabs(v[i]) > std::fabs(v[second]))
          second = i;
      int lo = std::min(first, second), hi = std::max(first, second);
      out.values[(r * k + g * 4) / 2] = v[lo];
      out.values[(r * k + g * 4) / 2 + 1] = v[hi];
      auto nibble = static_cast<uint8_t>(lo | hi << 2);
      out.meta[r * metaPerRow + g / 2] |= g % 2 ? nibble << 4 : nibble;
    }
  return out;
}

std::vector<float> decompress24(const float *values, const uint8_t *meta,
                                int64_t rows, int64_t k) {
  int64_t metaPerRow = (k / 4 + 1) / 2;
  std::vector<float> out(rows * k, 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < k / 4; ++g) {
      uint8_t byte = meta[r * metaPerRow + g / 2];
      uint8_t nibble = g % 2 ? byte >> 4 : byte & 0xf;
      int64_t base = r * k + g * 4;
      out[base + (nibble & 3)] = values[base / 2];
      out[base + (nibble >> 2 & 3)] = values[base / 2 + 1];
    }
  return out;
}

} // namespace ds
