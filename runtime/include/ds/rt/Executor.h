//===- Executor.h - runs a model function on a device ---------*- C++ -*-===//
//
// An Executor runs a model function on host tensors: it evaluates the
// shapes, has the device check every step at them, plans memory for the
// temporaries and the steps' scratch (cached per shape), and hands the
// steps to its device queue in one arena. Models are Model.h, KV caches
// KVCache.h, devices Device.h.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_EXECUTOR_H
#define DS_RT_EXECUTOR_H

#include "ds/rt/Device.h"
#include "ds/rt/KVCache.h"
#include "ds/rt/MemoryPlanner.h"
#include "ds/rt/Model.h"
#include "ds/support/HostTensor.h"

#include "absl/status/statusor.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ds::rt {
class ThreadPool;

class Executor {
public:
  /// Runs `model` on `device` (default: the CPU), splitting large steps
  /// over `pool`'s workers. Not thread-safe: one caller at a time.
  Executor(std::shared_ptr<const Model> model, ThreadPool *pool = nullptr,
           std::shared_ptr<Device> device = nullptr);
  ~Executor();
  Executor(Executor &&) noexcept;

  /// Runs `function`. `inputs` are its non-cache arguments in order; batch
  /// row b of every cache it touches is slot `slots[b]` of `cache`.
  /// Returns the non-cache results.
  ///
  /// With `outputRows`, only those rows of the first result (the logits; a
  /// row is an index over all but its last dimension, increasing, in range)
  /// are wanted: the first result is then [outputRows->size(), last dim],
  /// and when a projection produces it (a model's lm_head), that projection
  /// runs on those rows alone. A prompt needs the logits of its last
  /// position only; scoring and calibration pass no rows and get all.
  absl::StatusOr<std::vector<HostTensor>>
  run(const std::string &function,
      const std::vector<const HostTensor *> &inputs, KVCache *cache,
      const std::vector<int64_t> &slots,
      const std::vector<int64_t> *outputRows = nullptr);

  /// A pipeline stage's plan (ModelPlan::pipelineAxis): run() splits the
  /// rows into `n` micro-batches (contiguous blocks of the sequences, or of
  /// one sequence's positions) that follow each other through the stages,
  /// so that stage k works on one while stage k + 1 works on the one
  /// before; 0, the default, makes as many as there are stages when each
  /// has at least 16 rows, fewer otherwise (each micro-batch reads the
  /// stage's weights again, which a few decode rows do not repay). Results
  /// are the same bits for any n; every process must set the same n (the
  /// first run checks, refusing otherwise).
  void setMicroBatches(int64_t n) { microBatches = n; }
  int64_t getMicroBatches() const { return microBatches; }

  /// The working memory `function` needs for inputs of these shapes: its
  /// temporaries and every step's scratch, as planned (what the memory
  /// limit is compared with). Errors as run() would report them.
  absl::StatusOr<uint64_t>
  workingMemory(const std::string &function,
                const std::vector<std::vector<int64_t>> &inputShapes);

  /// Bytes of the arena the last run used.
  uint64_t arenaBytes() const { return arena ? arena->size() : 0; }
  /// Runs whose working memory (the planned arena: every temporary and
  /// every step's scratch) would exceed `bytes` are refused with an
  /// out-of-memory status (Status.h) before anything is allocated (0: no
  /// limit, the default).
  void setMemoryLimit(uint64_t bytes) { memoryLimit = bytes; }
  uint64_t getMemoryLimit() const { return memoryLimit; }

  /// Times every step by kind while on (off by default: two clock reads a
  /// step).
  void setProfiling(bool on) { profiling = on; }
  bool isProfiling() const { return profiling; }
  /// Time and calls per step kind since profiling began, largest first.
  std::string profileReport() const { return profileReport({this}); }
  /// The same, summed over several executors (thread time: executors that
  /// ran at once add up).
  static std::string
  profileReport(const std::vector<const Executor *> &executors);
  void resetProfile() { profile.clear(); }

private:
  struct Prepared;
  /// One run of the plan's function (run() without pipeline stages).
  absl::StatusOr<std::vector<HostTensor>>
  runOnce(const std::string &function,
          const std::vector<const HostTensor *> &inputs, KVCache *cache,
          const std::vector<int64_t> &slots,
          const std::vector<int64_t> *outputRows);
  /// run() of a pipeline stage (Pipeline.cpp): the micro-batches through
  /// this stage, then the last stage's results handed to every stage.
  absl::StatusOr<std::vector<HostTensor>>
  runPipelined(const std::string &function,
               const std::vector<const HostTensor *> &inputs, KVCache *cache,
               const std::vector<int64_t> &slots,
               const std::vector<int64_t> *outputRows);
  absl::StatusOr<const Prepared *>
  prepare(const FunctionPlan &fn,
          const std::vector<std::vector<int64_t>> &shapes);

  std::shared_ptr<const Model> model;
  ThreadPool *pool;
  std::shared_ptr<Device> device;
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Buffer> arena;
  uint64_t memoryLimit = 0;
  int64_t microBatches = 0;
  /// Whether a pipeline stage's communicator groups have been built.
  bool groupsBuilt = false;
  bool profiling = false;
  /// OpCode -> (seconds, calls).
  std::map<uint32_t, std::pair<double, int64_t>> profile;
  std::map<std::pair<std::string, std::vector<int64_t>>,
           std::unique_ptr<Prepared>>
      prepared;
  /// The last plan prepare() returned, and for what.
  const Prepared *last = nullptr;
  const FunctionPlan *lastFn = nullptr;
  std::vector<std::vector<int64_t>> lastShapes;
  /// Buffer addresses of the running function's values.
  std::vector<void *> pointers;
};

} // namespace ds::rt

#endif // DS_RT_EXECUTOR_H
