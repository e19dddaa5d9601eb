//===- DotTiles.h - helpers of the dot-product GEMM tiles -------*- C++ -*-===//
//
// Shared by the GEMM kernels that tile rows x panels (the packed-panel
// GEMM, W8A8's and W4A8's vpdpbusd / vpmaddwd, bf16's vdpbf16ps): the split
// of a weight's panels over the threads, a tile's bias columns, and the
// call of a tile templated on its row count.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_DOTTILES_H
#define DS_RT_KERNELS_DOTTILES_H

#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace ds::rt::kernels {

/// run(p0, p1) over w's panels, in groups of `per` panels split over
/// `pool` when the work is large enough (below ~1 MFLOP a parallel split
/// costs more than it saves): one contiguous chunk of groups per thread
/// when `contiguous` (calls that prepare what they read per call, as the
/// tall GEMM packs its rows), else group by group.
template <typename Run>
void splitPanels(const PackedWeight &w, int64_t m, int64_t per, bool contiguous,
                 ThreadPool *pool, const Run &run) {
  const int64_t panels = (w.n + kPanel - 1) / kPanel;
  const double flops = 2.0 * static_cast<double>(m) * w.n * w.k;
  const int64_t groups = (panels + per - 1) / per;
  if (!pool || pool->numWorkers() == 0 || groups < 2 || flops < 1e6) {
    run(0, panels);
    return;
  }
  const int64_t workers = pool->numWorkers();
  const int64_t grain = contiguous ? (groups + workers) / (workers + 1) : 1;
  pool->parallelFor(groups, grain, [&](int64_t g0, int64_t g1) {
    run(g0 * per, std::min(panels, g1 * per));
  });
}

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
