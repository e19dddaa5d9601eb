//===- Partitioned.h - the processes of a partitioned program ----*- C++
//-*-===//
//
// A module partitioned by ds-partition runs as one program per process of
// its `shard.grid`. `ProcessGrid` maps a tensor split over grid axes to
// the processes' blocks and back; `EmulatedCollectives` lets the reference
// interpreter run every process in one address space, a thread each, with
// the shard collectives as rendezvous between them.
//
//===----------------------------------------------------------------------===//

#ifndef DS_INTERPRETER_PARTITIONED_H
#define DS_INTERPRETER_PARTITIONED_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSSharding.h"
#include "ds/weights/Weights.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

namespace ds {

/// The type of `fn`'s argument `i` as its callers see it: the whole value
/// (the local type times the grid's split), for a function of a
/// partitioned module; the declared type otherwise.
RankedTensorType wholeArgumentType(func::FuncOp fn, unsigned i);

/// A module's process grid: processes are numbered row-major over its axes.
class ProcessGrid {
public:
  /// The module's grid: none when it has no `shard.grid`; an error (at the
  /// grid) when it has several or one of dynamic size.
  static FailureOr<std::optional<ProcessGrid>> of(ModuleOp module);

  explicit ProcessGrid(ArrayRef<int64_t> shape)
      : dims(shape.begin(), shape.end()) {}
  ArrayRef<int64_t> shape() const { return dims; }
  int64_t size() const;
  /// Process `rank`'s index along `axes`, row-major in the order listed.
  int64_t indexAlong(int64_t rank, ArrayRef<int16_t> axes) const;
  /// The number of processes along `axes`.
  int64_t sizeAlong(ArrayRef<int16_t> axes) const;
  /// The processes that differ from `rank` only along `axes`, in the order
  /// of their index along them.
  SmallVector<int64_t> group(int64_t rank, ArrayRef<int16_t> axes) const;

  /// The shape of one block of a value of shape `whole` split by `split`;
  /// fails when a dimension does not divide evenly.
  FailureOr<SmallVector<int64_t>>
  blockShape(ArrayRef<int64_t> whole,
             ArrayRef<SmallVector<int16_t>> split) const;
  /// The whole shape from one block's.
  SmallVector<int64_t> wholeShape(ArrayRef<int64_t> block,
                                  ArrayRef<SmallVector<int16_t>> split) const;
  /// Process `rank`'s block of `whole`.
  Tensor block(const Tensor &whole, ArrayRef<SmallVector<int16_t>> split,
               int64_t rank) const;
  /// The whole value from every process's block (blocks[rank]).
  Tensor assemble(ArrayRef<Tensor> blocks,
                  ArrayRef<SmallVector<int16_t>> split) const;

private:
  SmallVector<int64_t> dims;
};

/// `t[offsets : offsets + sizes]`, and its inverse (writes `block` into
/// `t` at `offsets`).
Tensor extractBlock(const Tensor &t, ArrayRef<int64_t> offsets,
                    ArrayRef<int64_t> sizes);
void insertBlock(Tensor &t, const Tensor &block, ArrayRef<int64_t> offsets);

/// Collectives between the threads that run a partitioned program's
/// processes. Every process makes the same collective calls in the same
/// order (the program is SPMD); each call is a rendezvous of all of them.
class EmulatedCollectives {
public:
  explicit EmulatedCollectives(const ProcessGrid &grid)
      : grid(grid), slots(grid.size()) {}

  /// Hands in `rank`'s tensor and returns those of its group along `axes`
  /// (ProcessGrid::group order); fails when another process has failed.
  FailureOr<std::vector<Tensor>> exchange(int64_t rank, ArrayRef<int16_t> axes,
                                          const Tensor &mine);
  /// A process failed: every waiting and later exchange fails.
  void abort();

  const ProcessGrid &getGrid() const { return grid; }

private:
  /// Waits until every process has arrived; false when aborted.
  bool barrier(std::unique_lock<std::mutex> &lock);

  const ProcessGrid &grid;
  std::vector<Tensor> slots;
  std::mutex mutex;
  std::condition_variable arrived;
  int64_t waiting = 0;
  uint64_t generation = 0;
  bool aborted = false;
};

} // namespace ds

#endif // DS_INTERPRETER_PARTITIONED_H
