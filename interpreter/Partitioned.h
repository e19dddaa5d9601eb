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
#include "ds/weights/ProcessGrid.h"
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
