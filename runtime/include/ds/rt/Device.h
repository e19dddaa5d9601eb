//===- Device.h - where plan steps run: memory, queues, kernels -----------===//
//
// The executor does not call kernels itself: it plans memory, binds each
// value to a buffer and hands every step to a Queue of a Device.
//
//   Device     one compute device, shared by every executor on it: buffer
//              allocation, host <-> device copies, which steps it runs and
//              the scratch memory each needs (so the planner can place it
//              in the arena the memory limit covers), queues, and the
//              communicator of partitioned plans.
//   Queue      one executor's ordered stream of work on the device (a CPU
//              queue runs each step at once on the calling thread and its
//              workers; a CUDA queue would be a stream, replayable as a
//              graph). Not thread-safe: one executor, one queue.
//   Communicator  collectives between the ranks of a partitioned plan
//              (all-reduce, all-gather, all-to-all); none for one process.
//
// The CPU is the first device (cpuDevice()); docs/ARCHITECTURE.md says how
// a CUDA device and collective steps fit these seams.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_DEVICE_H
#define DS_RT_DEVICE_H

#include "ds/rt/Plan.h"
#include "ds/rt/ThreadScratch.h"

#include "absl/status/statusor.h"

#include <cstdint>
#include <memory>
#include <vector>

namespace ds::rt {

class Model;
class ThreadPool;

/// Memory on a device, released when destroyed.
class Buffer {
public:
  virtual ~Buffer() = default;
  virtual uint8_t *data() const = 0;
  virtual uint64_t size() const = 0;
};

/// A step's scratch as its device plans it: `own` bytes for the step's
/// buffers, then the per-thread region its kernels take from (`threads`:
/// on the thread running the step and on each CPU worker; see
/// ThreadScratch.h; devices without one leave it empty).
struct StepScratch {
  uint64_t own = 0;
  ThreadScratchNeed threads;
  /// Arena bytes when a queue with `workers` workers runs the step.
  uint64_t bytes(unsigned workers) const {
    return own + WorkerScratch::bytes(threads, workers);
  }
};

/// What one step sees when its queue runs it.
struct StepArgs {
  const Model *model = nullptr;
  /// The function the step belongs to (its values' kinds and types).
  const FunctionPlan *function = nullptr;
  /// Shape and buffer of every value of the function (device addresses).
  const std::vector<std::vector<int64_t>> *shapes = nullptr;
  const std::vector<void *> *buffers = nullptr;
  /// The step's scratch, planned in the arena (Device::planScratch): its
  /// own `scratchSize` bytes, followed by the per-thread region of its
  /// kernels, `threadScratch` for the running thread and each worker.
  uint8_t *scratch = nullptr;
  uint64_t scratchSize = 0;
  ThreadScratchNeed threadScratch;
  /// KV cache slot of each batch row (cache steps).
  const int64_t *slots = nullptr;
  /// When the caller wants some rows of the result this step produces
  /// (Executor::run's outputRows): the step may compute those rows alone,
  /// packed first, and then sets *rowsSelected.
  const std::vector<int64_t> *selectRows = nullptr;
  bool *rowsSelected = nullptr;
};

/// Collectives between the ranks of a partitioned plan, on the device's
/// memory. Single-process devices have none.
/// What a communicator has done so far (this process's side).
struct CommunicatorStats {
  int64_t calls = 0;
  int64_t bytesSent = 0; ///< this process's payload handed to collectives
  double seconds = 0;    ///< wall time inside them, waiting included
};

/// Where process `rank` of a grid of `shape` (processes numbered
/// row-major) falls when the grid is cut into groups of the processes that
/// differ only along `axes` (ascending): `group` numbers the groups by the
/// other axes' coordinates (row-major), `index` is the process's place in
/// its group (its coordinates along `axes`, row-major), `size` the group's.
struct GridGroup {
  int64_t group = 0, index = 0, size = 1;
};
inline GridGroup gridGroupOf(const std::vector<int64_t> &shape,
                             const std::vector<int64_t> &axes, int64_t rank) {
  GridGroup g;
  int64_t rest = rank;
  std::vector<int64_t> coord(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    coord[d] = rest % shape[d];
    rest /= shape[d];
  }
  for (size_t d = 0; d < shape.size(); ++d) {
    bool along = false;
    for (int64_t a : axes)
      along |= a == static_cast<int64_t>(d);
    if (along) {
      g.index = g.index * shape[d] + coord[d];
      g.size *= shape[d];
    } else {
      g.group = g.group * shape[d] + coord[d];
    }
  }
  return g;
}

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual CommunicatorStats stats() const { return {}; }
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// The communicator of the processes that differ from this one only
  /// along `axes` of the grid `shape` (this communicator's ranks numbered
  /// row-major over it), ranked by gridGroupOf's index: what a collective
  /// over part of a grid (tensor parallelism inside an expert-parallel
  /// grid) runs on. Building one is collective, so every process asks for
  /// the same groups in the same order (the plan's steps do); it is built
  /// on first use and lives as long as this communicator. This one itself
  /// when the group is every process.
  virtual absl::StatusOr<Communicator *>
  group(const std::vector<int64_t> &shape, const std::vector<int64_t> &axes) {
    if (gridGroupOf(shape, axes, rank()).size == size())
      return this;
    return absl::UnimplementedError(
        "this communicator cannot form groups of its processes");
  }
  /// In place: data[i] = sum over ranks of data[i].
  virtual absl::Status allReduceSum(float *data, int64_t count) = 0;
  /// out = the `count` floats of every rank, in rank order.
  virtual absl::Status allGather(const float *in, int64_t count,
                                 float *out) = 0;
  /// Rows to and from every rank (expert parallelism): sendCounts[r] rows
  /// of `width` floats go to rank r; recvCounts[r] come from it.
  virtual absl::Status
  allToAll(const float *in, const std::vector<int64_t> &sendCounts, float *out,
           const std::vector<int64_t> &recvCounts, int64_t width) = 0;
  /// Point to point (pipeline stages): `bytes` to rank `peer`, which
  /// receives them with recv(..., this rank). Messages between two ranks
  /// arrive in the order they were sent. A send may wait until the peer
  /// receives.
  virtual absl::Status send(const void *data, int64_t bytes, int peer) {
    return absl::UnimplementedError("this communicator cannot send");
  }
  virtual absl::Status recv(void *data, int64_t bytes, int peer) {
    return absl::UnimplementedError("this communicator cannot receive");
  }
  /// `bytes` of rank `root`'s data to every rank.
  virtual absl::Status broadcast(void *data, int64_t bytes, int root) {
    return absl::UnimplementedError("this communicator cannot broadcast");
  }
};

/// Builds `comm`'s groups (Communicator::group) along every proper subset
/// of the axes of the grid `shape`, in one order. Building a group is
/// collective, and processes that run different steps (pipeline stages,
/// replicas without rows in a step) would otherwise ask for them in
/// different orders; every process calls this at the same point. Cheap
/// after the first call (the groups live in the communicator).
absl::Status buildAllGroups(Communicator &comm,
                            const std::vector<int64_t> &shape);

class Queue {
public:
  virtual ~Queue() = default;
  /// Enqueues `step` (a CPU queue runs it before returning). Errors name
  /// the step's location.
  virtual absl::Status run(const Step &step, const StepArgs &args) = 0;
  /// Waits until everything enqueued has finished.
  virtual absl::Status synchronize() = 0;
};

class Device {
public:
  virtual ~Device() = default;
  /// "cpu", "cuda:0", ...
  virtual const char *name() const = 0;

  /// `bytes` of device memory, 64-byte aligned (DS_OUT_OF_MEMORY-style
  /// outOfMemoryError when it cannot be had).
  virtual absl::StatusOr<std::unique_ptr<Buffer>> allocate(uint64_t bytes) = 0;
  /// Host memory to device memory and back (plain copies on the CPU).
  virtual absl::Status copyToDevice(void *dst, const void *src,
                                    uint64_t bytes) = 0;
  virtual absl::Status copyToHost(void *dst, const void *src,
                                  uint64_t bytes) = 0;

  /// Whether this device runs `step` at these value shapes, as its kernels
  /// read them (checked once per shape, before anything runs).
  virtual absl::Status
  checkStep(const Model &model, const Step &step,
            const std::vector<std::vector<int64_t>> &shapes) const = 0;
  /// The scratch `step` of `function` needs at these shapes (planned in
  /// the arena once per shape, live during the step only): the step's own
  /// buffers and what its kernels take on each thread (ThreadScratch.h).
  virtual StepScratch
  planScratch(const Model &model, const FunctionPlan &function,
              const Step &step,
              const std::vector<std::vector<int64_t>> &shapes) const = 0;

  /// A queue for one executor; `pool` holds the CPU worker threads a step
  /// may split over (may be null).
  virtual std::unique_ptr<Queue> createQueue(ThreadPool *pool) = 0;

  /// The communicator of a partitioned plan's rank; null in one process.
  virtual Communicator *communicator() { return nullptr; }
};

/// The host CPU (AVX-512 or AVX2 kernels, picked at run time). Shared.
std::shared_ptr<Device> cpuDevice();

/// The communicator this process's CPU device runs collective steps
/// through: a partitioned plan's rank among its processes (MPI when
/// launched by mpirun; see tools/ds-run). Set it once, before creating
/// executors; none (null) by default, and a plan with collective steps then
/// fails at its first one, naming the launch it needs.
void setCommunicator(std::shared_ptr<Communicator> communicator);
std::shared_ptr<Communicator> &processCommunicator();

} // namespace ds::rt

#endif // DS_RT_DEVICE_H
