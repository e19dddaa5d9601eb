//===- DSSharding.h - how a partitioned function's values are split -*- C++
//-*-===//
//
// ds-partition leaves one program per process; its functions record, per
// argument and result, how the whole (unpartitioned) value is split over
// the grid's axes, so that callers keep passing and receiving whole values
// (the interpreter) or each process's block of them (the runtime).
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSSHARDING_H
#define DS_DIALECTS_DS_IR_DSSHARDING_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"

namespace ds {

/// The function argument and result attribute (a `#shard.axisarray`): the
/// grid axes each dimension of the whole value is split over. Absent: the
/// value is replicated.
inline constexpr llvm::StringLiteral kSplitAxesAttrName = "ds.split_axes";

namespace detail {
inline SmallVector<SmallVector<int16_t>> splitAxesOf(Attribute attr) {
  SmallVector<SmallVector<int16_t>> out;
  if (auto axes = dyn_cast_or_null<shard::GridAxesArrayAttr>(attr))
    for (shard::GridAxesAttr dim : axes.getAxes())
      out.emplace_back(dim.asArrayRef());
  return out;
}
} // namespace detail

/// The split axes of `fn`'s argument `i` / result `i` (empty: replicated).
inline SmallVector<SmallVector<int16_t>> argumentSplitAxes(func::FuncOp fn,
                                                           unsigned i) {
  return detail::splitAxesOf(fn.getArgAttr(i, kSplitAxesAttrName));
}
inline SmallVector<SmallVector<int16_t>> resultSplitAxes(func::FuncOp fn,
                                                         unsigned i) {
  return detail::splitAxesOf(fn.getResultAttr(i, kSplitAxesAttrName));
}

} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSSHARDING_H
