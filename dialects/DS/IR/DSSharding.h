//===- DSSharding.h - how a partitioned function's values are split -*- C++
//-*-===//
//
// ds-partition leaves one program per process; its functions record, per
// argument and result, how the whole (unpartitioned) value is split over
// the grid's axes, so that callers keep passing and receiving whole values
// (the interpreter) or each process's block of them (the runtime).
//
// With pipeline parallelism (ds-partition{pp}) a function becomes one
// function per stage: each runs a block of consecutive layers and hands its
// activations to the next with shard.send / shard.recv. The function's name
// stays a declaration with the whole signature that lists its stages; each
// stage's arguments and results say which of the whole function's they are.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSSHARDING_H
#define DS_DIALECTS_DS_IR_DSSHARDING_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"

#include <optional>

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

/// On the declaration of a pipelined function: its stage functions, one per
/// index along the pipeline axis (an array of symbol references), and that
/// axis of the module's grid (an integer).
inline constexpr llvm::StringLiteral kPipelineStagesAttrName =
    "ds.pipeline_stages";
inline constexpr llvm::StringLiteral kPipelineAxisAttrName = "ds.pipeline_axis";
/// On a stage function's arguments / results: the index of the whole
/// function's argument / result it is (an integer).
inline constexpr llvm::StringLiteral kPipelineArgAttrName = "ds.pipeline_arg";
inline constexpr llvm::StringLiteral kPipelineResultAttrName =
    "ds.pipeline_result";

/// A shard.send's or shard.recv's grid axes and its peer's index along them
/// (none when the op gives it in SSA values): what the interpreter and
/// codegen both read from the two ops.
struct PointToPoint {
  ArrayRef<int16_t> axes;
  std::optional<ArrayRef<int64_t>> peer;
};
inline PointToPoint pointToPointOf(Operation *op) {
  if (auto send = dyn_cast<shard::SendOp>(op))
    return {send.getGridAxes(),
            send.getDestinationDynamic().empty()
                ? std::optional<ArrayRef<int64_t>>(send.getDestination())
                : std::nullopt};
  auto recv = cast<shard::RecvOp>(op);
  return {recv.getGridAxes(),
          recv.getSourceDynamic().empty() ? recv.getSource() : std::nullopt};
}

/// A pipelined function: the declaration `fn` and its stages.
struct PipelineStages {
  int16_t axis = -1;
  SmallVector<func::FuncOp> stages;
};
/// The stages of `fn` when it is a pipelined function's declaration; none
/// otherwise; an error at `fn` when its stage list is malformed (a missing
/// or non-function symbol, no axis).
FailureOr<std::optional<PipelineStages>> pipelineStagesOf(func::FuncOp fn);
/// The whole function's argument / result index of a stage's argument /
/// result `i` (-1 when it has none).
inline int64_t pipelineArgument(func::FuncOp stage, unsigned i) {
  auto a = stage.getArgAttrOfType<IntegerAttr>(i, kPipelineArgAttrName);
  return a ? a.getInt() : -1;
}
inline int64_t pipelineResult(func::FuncOp stage, unsigned i) {
  auto a = stage.getResultAttrOfType<IntegerAttr>(i, kPipelineResultAttrName);
  return a ? a.getInt() : -1;
}

} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSSHARDING_H
