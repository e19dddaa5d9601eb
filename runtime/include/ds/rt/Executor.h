//===- Executor.h - loaded models, KV caches and plan execution --*- C++
//-*-===//
//
// A Model is an artifact in memory: the plan, the weights (memory-mapped from
// the file, or owned when the compiler hands them over in process), and the
// generated kernels (the artifact's shared object loaded from a memfd, or
// function pointers from the compiler's JIT). A KVCache holds every cache of
// a model for a number of sequence slots. An Executor runs a model function
// on host tensors: it evaluates the shapes, plans memory for them (cached
// per shape), and runs the steps in one pre-faulted arena.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_EXECUTOR_H
#define DS_RT_EXECUTOR_H

#include "ds/rt/Kernels.h"
#include "ds/rt/MemoryPlanner.h"
#include "ds/rt/Plan.h"
#include "ds/support/HostTensor.h"

#include "absl/status/statusor.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ds::rt {
class ThreadPool;

class Model {
public:
  /// Finds a generated kernel by symbol; null when missing.
  using SymbolResolver = std::function<void *(const std::string &)>;

  struct LoadOptions {
    /// Check the header, code and weights checksums (a full pass over the
    /// weights: several GB/s).
    bool verifyChecksums = true;
    /// Load the generated code (off: only the plan and weights, e.g. to
    /// inspect or fuzz an artifact; steps with generated kernels then fail
    /// to bind unless `resolve` provides them).
    bool loadCode = true;
    /// With loadCode off: where generated kernels come from instead (a
    /// host's own build of them, or stand-ins when fuzzing the plan).
    std::function<void *(const std::string &)> resolve;
  };

  /// Loads an artifact file (checks magic, sizes, checksums, the target).
  static absl::StatusOr<std::shared_ptr<Model>>
  load(const std::string &path, const LoadOptions &options);
  static absl::StatusOr<std::shared_ptr<Model>> load(const std::string &path) {
    return load(path, LoadOptions());
  }
  /// The same from bytes in memory, which must outlive the model; `name`
  /// stands in for the path in messages.
  static absl::StatusOr<std::shared_ptr<Model>>
  parse(const uint8_t *bytes, size_t size, const std::string &name,
        const LoadOptions &options);
  /// A model from parts made in this process (the compiler's JIT): `keep`
  /// owns whatever `resolve` returns pointers into.
  static absl::StatusOr<std::shared_ptr<Model>>
  fromParts(ModelPlan plan, std::string weights, SymbolResolver resolve,
            std::shared_ptr<void> keep);
  ~Model();

  const ModelPlan &plan() const { return plan_; }
  /// Raw weight bytes of table entry i.
  const void *weightData(int32_t i) const { return weightPtrs[i]; }
  /// GEMM view of a packed weight (one per expert).
  const std::vector<kernels::PackedWeight> &packed(int32_t i) const {
    return packedViews[i];
  }
  /// Generated kernel of a step, resolved at load time.
  using Kernel = void (*)(void **);
  Kernel kernel(const std::string &symbol) const;

private:
  Model() = default;
  absl::Status bind(SymbolResolver resolve);

  ModelPlan plan_;
  std::string ownedWeights;
  const uint8_t *weightsBase = nullptr;
  uint64_t weightsSize = 0;
  std::vector<const void *> weightPtrs;
  std::vector<std::vector<kernels::PackedWeight>> packedViews;
  std::map<std::string, Kernel> kernels_;
  void *mapping = nullptr;
  size_t mappingSize = 0;
  void *library = nullptr;
  std::shared_ptr<void> keep;
};

/// The KV caches of a model for `slots` sequences.
class KVCache {
public:
  static absl::StatusOr<KVCache> create(const ModelPlan &plan, int64_t slots);
  int64_t numSlots() const { return slots; }
  float *data(int32_t cache) { return storage[cache].data(); }
  /// Floats per slot of cache i.
  int64_t slotSize(int32_t cache) const { return slotFloats[cache]; }
  /// Zeroes one slot (a new sequence).
  void clearSlot(int64_t slot);

private:
  int64_t slots = 0;
  std::vector<std::vector<float>> storage;
  std::vector<int64_t> slotFloats;
};

class Executor {
public:
  Executor(std::shared_ptr<const Model> model, ThreadPool *pool = nullptr);
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

  /// Bytes of the arena the last run used.
  uint64_t arenaBytes() const { return arena.size(); }
  /// Runs whose working memory (the planned arena) would exceed `bytes` are
  /// refused with ResourceExhausted before anything is allocated (0: no
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
  absl::Status
  checkShapes(const Step &step,
              const std::vector<std::vector<int64_t>> &shapes) const;
  absl::StatusOr<const Prepared *>
  prepare(const FunctionPlan &fn,
          const std::vector<std::vector<int64_t>> &shapes);

  std::shared_ptr<const Model> model;
  ThreadPool *pool;
  Arena arena;
  uint64_t memoryLimit = 0;
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
