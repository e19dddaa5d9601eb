//===- ThreadScratch.h - kernels' per-thread scratch, from the plan -------===//
//
// The scratch a kernel takes while it runs on a thread (packed activation
// rows, a widened weight slab, quantized activations, widened cache blocks,
// attention scores, router tables) comes from the thread's ThreadScratch:
// a stack of allocations released in LIFO order by ThreadScratch::Scope.
//
// While a step runs, its queue binds the running thread to slot 0 of the
// step's WorkerScratch, a region planned in the executor's arena like the
// rest of the step's scratch, and ThreadPool::parallelFor binds every worker
// that helps with a loop to that worker's own slot of the same region. The
// slots are sized by the kernels' *ScratchBytes functions (Kernels.h), so
// every byte a step's kernels take is in the plan and under the memory
// limit. A thread with no binding (kernels called directly: tests,
// benchmarks) takes heap chunks that it keeps for its next calls. A take
// that a bound slot cannot hold, which would be a planning bug, is counted
// (overflows()) and served from the heap instead of failing the step; the
// tests run every kernel at exactly its planned size and check the count.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_THREADSCRATCH_H
#define DS_RT_THREADSCRATCH_H

#include <cstddef>
#include <cstdint>

namespace ds::rt {

/// Every take is rounded up to a multiple of this (and aligned to it).
inline constexpr uint64_t kScratchAlign = 64;
inline constexpr uint64_t scratchRound(uint64_t bytes) {
  return (bytes + kScratchAlign - 1) & ~(kScratchAlign - 1);
}

/// What a step's kernels take on the thread that runs the step and on each
/// pool worker that helps it, at most.
struct ThreadScratchNeed {
  uint64_t caller = 0, worker = 0;
  /// Both at least `other`'s (kernels run one after another).
  ThreadScratchNeed &atLeast(const ThreadScratchNeed &other) {
    caller = caller > other.caller ? caller : other.caller;
    worker = worker > other.worker ? worker : other.worker;
    return *this;
  }
  /// The same on every thread.
  static ThreadScratchNeed everywhere(uint64_t bytes) { return {bytes, bytes}; }
};

/// A step's per-thread region: slot 0 for the thread running the step, then
/// one slot per pool worker.
struct WorkerScratch {
  uint8_t *base = nullptr;
  uint64_t callerBytes = 0, workerBytes = 0;
  unsigned workers = 0;

  /// The region's size for `need` and `workers` pool workers.
  static uint64_t bytes(const ThreadScratchNeed &need, unsigned workers) {
    return scratchRound(need.caller) +
           static_cast<uint64_t>(workers) * scratchRound(need.worker);
  }
  static WorkerScratch carve(uint8_t *base, const ThreadScratchNeed &need,
                             unsigned workers) {
    return {base, scratchRound(need.caller), scratchRound(need.worker),
            workers};
  }
};

class ThreadScratch {
public:
  /// Allocations made while a Scope lives are released when it ends. Scopes
  /// nest, on one thread.
  class Scope {
  public:
    Scope();
    ~Scope();
    Scope(const Scope &) = delete;
    Scope &operator=(const Scope &) = delete;
    /// `bytes` rounded up to kScratchAlign, aligned to it; uninitialized.
    void *bytes(uint64_t bytes);
    template <typename T> T *array(int64_t count) {
      return static_cast<T *>(
          bytes(sizeof(T) * static_cast<uint64_t>(count > 0 ? count : 0)));
    }

  private:
    uint64_t regionMark;
    size_t chunkMark;
    uint64_t chunkUsedMark;
  };

  /// Binds the calling thread to slot `slot` of `region` (0: the thread
  /// running the step; i: pool worker i - 1) for this object's life; the
  /// previous binding comes back after. A slot the region lacks binds an
  /// empty slot (every take then overflows).
  class Binding {
  public:
    Binding(const WorkerScratch &region, unsigned slot);
    ~Binding();
    Binding(const Binding &) = delete;
    Binding &operator=(const Binding &) = delete;

  private:
    struct Saved {
      WorkerScratch region;
      uint8_t *base;
      uint64_t size, used;
      bool bound;
    } saved;
  };

  /// The region the calling thread is bound to, if any (what parallelFor
  /// hands its helpers).
  static bool currentRegion(WorkerScratch *region);
  /// Takes that a bound slot could not hold, process-wide.
  static uint64_t overflows();
};

} // namespace ds::rt

#endif // DS_RT_THREADSCRATCH_H
