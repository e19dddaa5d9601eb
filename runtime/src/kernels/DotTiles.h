//===- DotTiles.h - helpers of the dot-product GEMM tiles -------*- C++ -*-===//
//
// Shared by the kernels that tile rows x panels over dot-product
// instructions (W8A8's vpdpbusd / vpmaddwd, bf16's vdpbf16ps): a tile's
// bias columns, and the call of a tile templated on its row count.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_DOTTILES_H
#define DS_RT_KERNELS_DOTTILES_H

#include <cstdint>
#include <type_traits>

namespace ds::rt::kernels {

/// The bias of `count` columns from `col` with zeros past `nvalid` (a tile
/// reads whole panels), in `tile`; null without a bias.
inline const float *biasTile(const float *bias, int64_t col, int nvalid,
                             int count, float *tile) {
  if (!bias)
    return nullptr;
  for (int j = 0; j < count; ++j)
    tile[j] = j < nvalid ? bias[col + j] : 0.0f;
  return tile;
}

/// fn(std::integral_constant<int, rows>()) for 1 <= rows <= Max (nothing
/// otherwise): a tile's row count as a template argument.
template <int Max, typename Fn>
inline void withRowCount(int64_t rows, Fn &&fn) {
  if constexpr (Max >= 1) {
    if (rows == Max)
      fn(std::integral_constant<int, Max>());
    else
      withRowCount<Max - 1>(rows, fn);
  }
}

} // namespace ds::rt::kernels

#endif // DS_RT_KERNELS_DOTTILES_H
