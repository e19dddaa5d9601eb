//===- Partitioned.h - the processes of a partitioned program ----*- C++
//-*-===//
//
// A module partitioned by ds-partition runs as one program per process of
// its `shard.grid`. `ProcessGrid` maps a tensor split over grid axes to
// the processes' blocks and back; `EmulatedCollectives` lets the reference
// interpreter run every process in one address space, a thread each, with
// the shard collectives as rendezvous between them and a pipeline's sends
// and receives as queues.
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
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace ds {

/// The type of `fn`'s argument `i` as its callers see it: the whole value
/// (the local type times the grid's split), for a function of a
/// partitioned module; the declared type otherwise.
RankedTensorType wholeArgumentType(func::FuncOp fn, unsigned i);

/// Collectives between the threads that run a partitioned program's
/// processes. The processes of a group (those that differ only along a
/// collective's axes) make the same collective calls on it in the same
/// order; each call is a rendezvous of the group, as a collective on an
/// MPI communicator of the group is. Sends and receives between two
/// processes (pipeline stages) go through a queue per pair, in order.
class EmulatedCollectives {
public:
  explicit EmulatedCollectives(const ProcessGrid &grid) : grid(grid) {}

  /// Hands in `rank`'s tensor and returns those of its group along `axes`
  /// (ProcessGrid::group order); fails when another process has failed.
  FailureOr<std::vector<Tensor>> exchange(int64_t rank, ArrayRef<int16_t> axes,
                                          const Tensor &mine);
  /// Queues `t` for process `to` (never waits).
  LogicalResult send(int64_t from, int64_t to, const Tensor &t);
  /// The next tensor `from` sent to `to`, waiting for it; fails when
  /// another process has failed.
  FailureOr<Tensor> recv(int64_t from, int64_t to);
  /// A process failed: every waiting and later exchange fails.
  void abort();
  /// A process returned: it takes no further part.
  void finished();
  /// Whether the run was aborted because every process still running
  /// waited for another (a send never made, collectives in another order).
  bool deadlocked() const { return deadlock; }

  const ProcessGrid &getGrid() const { return grid; }

private:
  /// One group's rendezvous.
  struct Group {
    std::vector<Tensor> slots;
    int64_t waiting = 0;
    uint64_t generation = 0;
  };
  /// Waits until the group's `size` processes have arrived; false when
  /// aborted.
  bool barrier(std::unique_lock<std::mutex> &lock, Group &g, int64_t size);
  /// Waits until `ready` holds or the run is aborted. When every process
  /// still running waits and none can go on, that is a deadlock: the run
  /// is aborted.
  void waitFor(std::unique_lock<std::mutex> &lock,
               const std::function<bool()> &ready);

  const ProcessGrid &grid;
  /// By axes and the group's first process.
  std::map<std::pair<std::vector<int16_t>, int64_t>, Group> groups;
  std::map<std::pair<int64_t, int64_t>, std::deque<Tensor>> mailboxes;
  std::mutex mutex;
  std::condition_variable arrived;
  /// What each waiting process waits for.
  std::vector<const std::function<bool()> *> waiting;
  int64_t done = 0;
  bool aborted = false, deadlock = false;
};

} // namespace ds

#endif // DS_INTERPRETER_PARTITIONED_H
