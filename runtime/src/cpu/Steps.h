//===- Steps.h - the CPU device's step kernels, one function per kind -----===//
//
// For every step kind: the shape check (what its kernel reads, checked once
// per shape), the scratch it needs (planned in the arena: the step's own,
// and what its kernels take from ThreadScratch on the running thread and on
// each worker), and the run function. CpuDevice dispatches on Step::op() to
// these.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_CPU_STEPS_H
#define DS_RT_CPU_STEPS_H

#include "ds/rt/Device.h"
#include "ds/rt/Model.h"
#include "ds/rt/ThreadScratch.h"

#include "absl/strings/str_cat.h"

#include <string>
#include <utility>
#include <vector>

namespace ds::rt::cpu {

using Shapes = std::vector<std::vector<int64_t>>;

inline int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

/// Every scratch buffer starts on a 64-byte boundary.
inline uint64_t alignScratch(uint64_t bytes) { return (bytes + 63) & ~63ULL; }

/// Shape questions a check asks about one step.
struct ShapeView {
  const Model &model;
  const Step &step;
  const Shapes &shapes;
  /// The step's function (its values' types), when known.
  const FunctionPlan *function = nullptr;

  const std::vector<int64_t> &of(int32_t v) const { return shapes[v]; }
  int64_t count(int32_t v) const { return numElements(of(v)); }
  int64_t last(int32_t v) const { return of(v).empty() ? 1 : of(v).back(); }
  size_t rank(int32_t v) const { return of(v).size(); }
  /// Rows of a value: all but its last dim.
  int64_t rows(int32_t v) const { return last(v) ? count(v) / last(v) : 0; }
  /// How value v's elements are stored (F32 when the function is unknown).
  ElemType type(int32_t v) const {
    return function ? function->values[v].type : ElemType::F32;
  }
  int64_t weightCount(int32_t w) const {
    int64_t n = 1;
    for (int64_t d : model.plan().weights[w].shape)
      n *= d;
    return n;
  }
  absl::Status bad(const std::string &what) const {
    return absl::InvalidArgumentError("shapes do not fit: " + what);
  }
};

/// What a run function works with: buffers by value id, the step's
/// scratch, the workers.
class StepContext {
public:
  StepContext(const Step &step, const StepArgs &args, ThreadPool *pool,
              Communicator *communicator = nullptr)
      : step(step), args(args), pool(pool), model(*args.model),
        communicator(communicator) {}

  float *F(int32_t v) const { return static_cast<float *>((*args.buffers)[v]); }
  int64_t *I(int32_t v) const {
    return static_cast<int64_t *>((*args.buffers)[v]);
  }
  void *ptr(int32_t v) const { return (*args.buffers)[v]; }
  /// How value v's elements are stored (F32 unless a narrow KV cache).
  ElemType type(int32_t v) const { return args.function->values[v].type; }
  /// The scale of the KV cache value v is (or aliases): an e4m3 cache's, 1
  /// for other caches and for values that are not caches.
  float cacheScale(int32_t v) const {
    const std::vector<ValueInfo> &values = args.function->values;
    while (values[v].kind == ValueInfo::Kind::Alias)
      v = values[v].index;
    return values[v].kind == ValueInfo::Kind::Cache
               ? static_cast<float>(model.plan().caches[values[v].index].scale)
               : 1.0f;
  }
  const std::vector<int64_t> &shape(int32_t v) const {
    return (*args.shapes)[v];
  }
  int64_t rows(int32_t v) const {
    const auto &s = shape(v);
    return s.empty() ? 1 : numElements(s) / std::max<int64_t>(s.back(), 1);
  }
  const float *weight(int32_t i) const {
    return static_cast<const float *>(model.weightData(step.weights[i]));
  }
  /// `count` floats of the step's planned scratch (64-byte aligned).
  float *scratch(int64_t count) {
    return static_cast<float *>(
        scratchBytes(static_cast<uint64_t>(count) * sizeof(float)));
  }
  /// `bytes` of it, rounded up to 64; null past what was planned.
  void *scratchBytes(uint64_t bytes) {
    void *p = args.scratch + used;
    used += alignScratch(bytes);
    return used <= args.scratchSize ? p : nullptr;
  }
  absl::Status error(const std::string &what) const {
    return absl::InvalidArgumentError(step.location + ": " + what);
  }

  const Step &step;
  const StepArgs &args;
  ThreadPool *pool;
  const Model &model;
  /// The process's communicator (collective steps); null in one process.
  Communicator *communicator;

private:
  uint64_t used = 0;
};

/// Scratch bytes of `floats` floats as StepContext::scratch rounds them.
inline uint64_t scratchFloats(int64_t floats) {
  return alignScratch(static_cast<uint64_t>(floats) * sizeof(float));
}

// Tensor steps (TensorSteps.cpp).
absl::Status checkEmbedding(const ShapeView &v);
absl::Status runEmbedding(StepContext &c);
absl::Status checkRMSNorm(const ShapeView &v);
absl::Status runRMSNorm(StepContext &c);
absl::Status checkCopy(const ShapeView &v);
absl::Status runCopy(StepContext &c);
absl::Status checkAlias(const ShapeView &v);

// Collective steps (CollectiveSteps.cpp).
/// The communicator of this process's group along `axes` of the plan's
/// grid (empty: every process); an error naming the launch when the
/// process has none, or one of another size or rank.
absl::StatusOr<Communicator *>
communicatorFor(StepContext &c, const std::vector<int64_t> &axes);
absl::Status checkAllReduce(const ShapeView &v);
absl::Status runAllReduce(StepContext &c);
absl::Status checkAllGather(const ShapeView &v);
uint64_t scratchAllGather(const ShapeView &v);
absl::Status runAllGather(StepContext &c);
/// Pipeline stages: the activations to the next stage, from the previous.
absl::Status runSend(StepContext &c);
absl::Status runRecv(StepContext &c);

// GEMM steps (GemmSteps.cpp).
absl::Status checkLinear(const ShapeView &v);
uint64_t scratchLinear(const ShapeView &v);
ThreadScratchNeed threadScratchLinear(const ShapeView &v);
absl::Status runLinear(StepContext &c);
absl::Status checkRouter(const ShapeView &v);
uint64_t scratchRouter(const ShapeView &v);
ThreadScratchNeed threadScratchRouter(const ShapeView &v);
absl::Status runRouter(StepContext &c);
absl::Status checkMoE(const ShapeView &v);
uint64_t scratchMoE(const ShapeView &v);
ThreadScratchNeed threadScratchMoE(const ShapeView &v);
absl::Status runMoE(StepContext &c);

// Attention steps (AttentionSteps.cpp).
absl::Status checkRope(const ShapeView &v);
uint64_t scratchRope(const ShapeView &v);
ThreadScratchNeed threadScratchRope(const ShapeView &v);
absl::Status runRope(StepContext &c);
absl::Status checkCacheUpdate(const ShapeView &v);
absl::Status runCacheUpdate(StepContext &c);
absl::Status checkAttention(const ShapeView &v);
uint64_t scratchAttention(const ShapeView &v);
ThreadScratchNeed threadScratchAttention(const ShapeView &v);
absl::Status runAttention(StepContext &c);
absl::Status checkMLAAttention(const ShapeView &v);
uint64_t scratchMLAAttention(const ShapeView &v);
ThreadScratchNeed threadScratchMLAAttention(const ShapeView &v);
absl::Status runMLAAttention(StepContext &c);

// Generated kernels (GeneratedSteps.cpp): memref descriptors are laid out
// in `state`, which belongs to the queue (no allocation per call once grown).
struct GeneratedState {
  std::vector<std::pair<void *, const std::vector<int64_t> *>> args;
  std::vector<int64_t> words;
  std::vector<void *> pointers;
};
absl::Status checkElementwise(const ShapeView &v);
absl::Status checkGenerated(const ShapeView &v);
absl::Status runGenerated(StepContext &c, GeneratedState &state);

} // namespace ds::rt::cpu

#endif // DS_RT_CPU_STEPS_H
