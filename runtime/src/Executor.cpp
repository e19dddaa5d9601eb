//===- Executor.cpp - plan execution --------------------------------------===//
//
// Per function and input shapes (cached): every value's shape, each step
// checked by the device against what its kernel reads, and one memory plan
// for the temporaries and every step's scratch (liveness-based, one arena,
// bounded by the memory limit). Per run: buffers bound, steps handed to the
// device's queue in order, results copied out. The step kernels are the
// device's (runtime/src/cpu/ for the CPU).
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Executor.h"
#include "ds/rt/Status.h"
#include "ds/rt/ThreadPool.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>

namespace ds::rt {

struct Executor::Prepared {
  std::vector<std::vector<int64_t>> shapes;
  /// Arena offset of each Temp value (or -1).
  std::vector<int64_t> offsets;
  /// Value whose storage each value uses (itself unless an alias).
  std::vector<int32_t> base;
  /// Per step: its scratch's arena offset and size (0: none).
  std::vector<uint64_t> scratchOffsets;
  std::vector<StepScratch> scratch;
  uint64_t arenaSize = 0;
  /// The first result's storage when no step reads it (only the caller
  /// does), so that its producer may compute just the rows a caller asks
  /// for (run's outputRows); -1 otherwise.
  int32_t selectableOutput = -1;
};

Executor::Executor(std::shared_ptr<const Model> model, ThreadPool *pool,
                   std::shared_ptr<Device> device)
    : model(std::move(model)), pool(pool),
      device(device ? std::move(device) : cpuDevice()),
      queue(this->device->createQueue(pool)) {}
Executor::~Executor() = default;
Executor::Executor(Executor &&) noexcept = default;

namespace {
int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}
} // namespace

absl::StatusOr<const Executor::Prepared *>
Executor::prepare(const FunctionPlan &fn,
                  const std::vector<std::vector<int64_t>> &inputShapes) {
  // Steps of the same function and shapes in a row (decode) skip the
  // lookup.
  if (last && lastFn == &fn && lastShapes == inputShapes)
    return last;
  std::vector<int64_t> key;
  for (const auto &s : inputShapes) {
    key.push_back(static_cast<int64_t>(s.size()));
    key.insert(key.end(), s.begin(), s.end());
  }
  auto remember = [&](const Prepared *p) {
    last = p;
    lastFn = &fn;
    lastShapes = inputShapes;
    return p;
  };
  auto found = prepared.find({fn.name, key});
  if (found != prepared.end())
    return remember(found->second.get());
  // Dynamic batching sees many row counts: keep the cache bounded (plans
  // are cheap to rebuild, a few microseconds each).
  if (prepared.size() >= 512) {
    prepared.clear();
    last = nullptr;
  }

  auto p = std::make_unique<Prepared>();
  size_t nv = fn.values.size();
  p->shapes.resize(nv);
  p->offsets.assign(nv, -1);
  p->base.resize(nv);
  for (size_t i = 0; i < fn.inputs.size(); ++i)
    p->shapes[fn.inputs[i]] = inputShapes[i];
  for (size_t v = 0; v < nv; ++v) {
    const ValueInfo &info = fn.values[v];
    p->base[v] = info.kind == ValueInfo::Kind::Alias ? p->base[info.index]
                                                     : static_cast<int32_t>(v);
    if (info.kind == ValueInfo::Kind::Input)
      continue;
    std::vector<int64_t> shape;
    for (const DimExpr &d : info.shape) {
      int64_t n = d.constant;
      for (auto [src, axis] : d.factors)
        n *= p->shapes[src][axis];
      if (n < 0)
        return absl::InvalidArgumentError("a negative dim in " + fn.name);
      shape.push_back(n);
    }
    p->shapes[v] = std::move(shape);
  }
  // Once per shape: every step's operands must fit what its kernel reads.
  for (const Step &step : fn.steps)
    if (absl::Status st = device->checkStep(*model, step, p->shapes); !st.ok())
      return absl::InvalidArgumentError(step.location + ": " +
                                        std::string(st.message()));
  // Lifetimes of Temp buffers, extended by their aliases' uses; outputs
  // live to the end.
  int64_t numSteps = static_cast<int64_t>(fn.steps.size());
  std::vector<int64_t> first(nv, -1), last(nv, -1);
  for (int64_t s = 0; s < numSteps; ++s) {
    for (int32_t r : fn.steps[s].results) {
      int32_t b = p->base[r];
      if (first[b] < 0)
        first[b] = s;
      last[b] = std::max(last[b], s);
    }
    for (int32_t o : fn.steps[s].operands)
      last[p->base[o]] = std::max(last[p->base[o]], s);
  }
  if (!fn.outputs.empty() &&
      fn.values[p->base[fn.outputs[0]]].kind != ValueInfo::Kind::Cache &&
      last[p->base[fn.outputs[0]]] == first[p->base[fn.outputs[0]]])
    p->selectableOutput = p->base[fn.outputs[0]];
  for (int32_t o : fn.outputs)
    last[p->base[o]] = numSteps;
  std::vector<BufferRequest> requests;
  std::vector<int32_t> owners;
  for (size_t v = 0; v < nv; ++v) {
    if (fn.values[v].kind != ValueInfo::Kind::Temp || first[v] < 0)
      continue;
    uint64_t bytes = static_cast<uint64_t>(numElements(p->shapes[v])) *
                     elemSize(fn.values[v].type);
    requests.push_back({std::max<uint64_t>(bytes, 1), 64, first[v], last[v]});
    owners.push_back(static_cast<int32_t>(v));
  }
  // Each step's scratch lives during that step only, in the same arena.
  size_t values = requests.size();
  p->scratchOffsets.assign(numSteps, 0);
  p->scratch.assign(numSteps, {});
  std::vector<int64_t> scratchSteps;
  const unsigned workers = pool ? pool->numWorkers() : 0;
  for (int64_t s = 0; s < numSteps; ++s) {
    p->scratch[s] = device->planScratch(*model, fn, fn.steps[s], p->shapes);
    uint64_t bytes = p->scratch[s].bytes(workers);
    if (!bytes)
      continue;
    requests.push_back({bytes, 64, s, s});
    scratchSteps.push_back(s);
  }
  absl::StatusOr<MemoryPlan> plan = planMemory(requests);
  if (!plan.ok())
    return plan.status();
  for (size_t i = 0; i < owners.size(); ++i)
    p->offsets[owners[i]] = static_cast<int64_t>(plan->offsets[i]);
  for (size_t i = 0; i < scratchSteps.size(); ++i)
    p->scratchOffsets[scratchSteps[i]] = plan->offsets[values + i];
  p->arenaSize = plan->arenaSize;
  const Prepared *out = p.get();
  prepared[{fn.name, key}] = std::move(p);
  return remember(out);
}

absl::StatusOr<uint64_t>
Executor::workingMemory(const std::string &function,
                        const std::vector<std::vector<int64_t>> &inputShapes) {
  const FunctionPlan *fn = model->plan().find(function);
  if (!fn)
    return absl::NotFoundError("the model has no function '" + function + "'");
  if (inputShapes.size() != fn->inputs.size())
    return absl::InvalidArgumentError(
        absl::StrCat(function, " takes ", fn->inputs.size(), " inputs, got ",
                     inputShapes.size()));
  absl::StatusOr<const Prepared *> p = prepare(*fn, inputShapes);
  if (!p.ok())
    return p.status();
  return (*p)->arenaSize;
}

absl::StatusOr<std::vector<HostTensor>>
Executor::run(const std::string &function,
              const std::vector<const HostTensor *> &inputs, KVCache *cache,
              const std::vector<int64_t> &slots,
              const std::vector<int64_t> *outputRows) {
  if (model->plan().pipelineAxis >= 0)
    return runPipelined(function, inputs, cache, slots, outputRows);
  return runOnce(function, inputs, cache, slots, outputRows);
}

absl::StatusOr<std::vector<HostTensor>>
Executor::runOnce(const std::string &function,
                  const std::vector<const HostTensor *> &inputs, KVCache *cache,
                  const std::vector<int64_t> &slots,
                  const std::vector<int64_t> *outputRows) {
  const ModelPlan &mp = model->plan();
  const FunctionPlan *fn = mp.find(function);
  if (!fn)
    return absl::NotFoundError("the model has no function '" + function + "'");
  if (inputs.size() != fn->inputs.size())
    return absl::InvalidArgumentError(
        absl::StrCat(function, " takes ", fn->inputs.size(), " inputs, got ",
                     inputs.size()));
  std::vector<std::vector<int64_t>> shapes;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueInfo &info = fn->values[fn->inputs[i]];
    const HostTensor &t = *inputs[i];
    bool typeOk = (info.type == ElemType::F32 && t.dtype == DType::F32) ||
                  (info.type == ElemType::I64 && t.dtype == DType::I64);
    if (!typeOk)
      return absl::InvalidArgumentError(
          absl::StrCat(function, " input ", i, " has element type ",
                       std::string(dtypeName(t.dtype)), ", expected ",
                       info.type == ElemType::F32 ? "F32" : "I64"));
    if (t.shape.size() != info.shape.size())
      return absl::InvalidArgumentError(
          absl::StrCat(function, " input ", i, " has rank ", t.shape.size(),
                       ", expected ", info.shape.size()));
    for (size_t d = 0; d < t.shape.size(); ++d) {
      const DimExpr &e = info.shape[d];
      if (t.shape[d] < 0 || (e.factors.empty() && e.constant != t.shape[d]))
        return absl::InvalidArgumentError(
            absl::StrCat(function, " input ", i, " has shape ", t.shapeString(),
                         ": dim ", d, " must be ", e.constant));
    }
    shapes.push_back(t.shape);
  }
  absl::StatusOr<const Prepared *> prep = prepare(*fn, shapes);
  if (!prep.ok())
    return prep.status();
  const Prepared &p = **prep;
  if (memoryLimit && p.arenaSize > memoryLimit)
    return outOfMemoryError(absl::StrCat(function, " needs ", p.arenaSize,
                                         " bytes of working memory for these "
                                         "shapes; the limit is ",
                                         memoryLimit));
  if (!arena || arena->size() < p.arenaSize) {
    arena.reset();
    absl::StatusOr<std::unique_ptr<Buffer>> a = device->allocate(p.arenaSize);
    if (!a.ok())
      return a.status();
    arena = std::move(*a);
  }
  // Every cache value's batch must match the slot table.
  for (size_t v = 0; v < fn->values.size(); ++v)
    if (fn->values[v].kind == ValueInfo::Kind::Cache) {
      if (!cache)
        return absl::InvalidArgumentError(function + " needs a KV cache");
      int64_t b = p.shapes[v][0];
      if (static_cast<int64_t>(slots.size()) != b)
        return absl::InvalidArgumentError(
            absl::StrCat(function, " runs ", b, " sequences but ", slots.size(),
                         " cache slots were given"));
      for (int64_t s : slots)
        if (s < 0 || s >= cache->numSlots())
          return absl::InvalidArgumentError(absl::StrCat(
              "cache slot ", s, " is outside [0, ", cache->numSlots(), ")"));
    }

  std::vector<void *> &ptr = pointers;
  ptr.assign(fn->values.size(), nullptr);
  for (size_t v = 0; v < fn->values.size(); ++v) {
    const ValueInfo &info = fn->values[v];
    switch (info.kind) {
    case ValueInfo::Kind::Input:
      break;
    case ValueInfo::Kind::Cache:
      ptr[v] = cache->data(info.index);
      break;
    case ValueInfo::Kind::Temp:
      if (p.offsets[v] >= 0)
        ptr[v] = arena->data() + p.offsets[v];
      break;
    case ValueInfo::Kind::Alias:
      break;
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i)
    ptr[fn->inputs[i]] = const_cast<uint8_t *>(inputs[i]->bytes.data());
  for (size_t v = 0; v < fn->values.size(); ++v)
    if (fn->values[v].kind == ValueInfo::Kind::Alias)
      ptr[v] = ptr[p.base[v]];

  auto rowsOf = [&](int32_t v) {
    const auto &s = p.shapes[v];
    return s.empty() ? 1 : numElements(s) / std::max<int64_t>(s.back(), 1);
  };
  // Wanted rows of the first result: its producing projection (if one
  // produces it) computes only those, packed at the start of its buffer.
  int32_t selectedValue = -1;
  bool selectedDone = false;
  if (outputRows) {
    if (fn->outputs.empty() ||
        fn->values[p.base[fn->outputs[0]]].kind == ValueInfo::Kind::Cache)
      return absl::InvalidArgumentError(function +
                                        " has no result to select rows of");
    int64_t rows = rowsOf(fn->outputs[0]), prev = -1;
    for (int64_t r : *outputRows) {
      if (r <= prev || r >= rows)
        return absl::InvalidArgumentError(
            absl::StrCat(function, ": selected rows must increase within [0, ",
                         rows, "); got ", r, " after ", prev));
      prev = r;
    }
    selectedValue = p.selectableOutput;
  }

  StepArgs args;
  args.model = model.get();
  args.function = fn;
  args.shapes = &p.shapes;
  args.buffers = &ptr;
  // Cache steps index slots per batch row: with B rows the slot table is
  // the caller's.
  args.slots = slots.data();
  for (size_t i = 0; i < fn->steps.size(); ++i) {
    const Step &s = fn->steps[i];
    const StepScratch &scratch = p.scratch[i];
    args.scratch = scratch.bytes(pool ? pool->numWorkers() : 0)
                       ? arena->data() + p.scratchOffsets[i]
                       : nullptr;
    args.scratchSize = scratch.own;
    args.threadScratch = scratch.threads;
    bool selects = selectedValue >= 0 && !s.results.empty() &&
                   s.results[0] == selectedValue;
    args.selectRows = selects ? outputRows : nullptr;
    args.rowsSelected = selects ? &selectedDone : nullptr;
    std::chrono::steady_clock::time_point start;
    if (profiling)
      start = std::chrono::steady_clock::now();
    if (absl::Status st = queue->run(s, args); !st.ok())
      return st;
    if (profiling) {
      auto &slot = profile[static_cast<uint32_t>(s.op())];
      slot.first += std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count();
      ++slot.second;
    }
  }
  if (absl::Status st = queue->synchronize(); !st.ok())
    return st;

  std::vector<HostTensor> results;
  for (int32_t o : fn->outputs) {
    if (fn->values[p.base[o]].kind == ValueInfo::Kind::Cache)
      continue;
    const ValueInfo &info = fn->values[o];
    DType dt = info.type == ElemType::F32   ? DType::F32
               : info.type == ElemType::I64 ? DType::I64
                                            : DType::I32;
    if (outputRows && results.empty()) {
      // The wanted rows: packed at the start by the projection, else picked
      // from the whole result.
      const int64_t width = p.shapes[o].empty() ? 1 : p.shapes[o].back();
      const int64_t count = static_cast<int64_t>(outputRows->size());
      const size_t rowBytes = width * dtypeSize(dt);
      HostTensor t(dt, {count, width});
      const auto *src = static_cast<const uint8_t *>(ptr[o]);
      for (int64_t i = 0; i < count; ++i)
        std::memcpy(t.bytes.data() + i * rowBytes,
                    src + (selectedDone ? i : (*outputRows)[i]) * rowBytes,
                    rowBytes);
      results.push_back(std::move(t));
      continue;
    }
    HostTensor t(dt, p.shapes[o]);
    if (!t.bytes.empty())
      std::memcpy(t.bytes.data(), ptr[o], t.bytes.size());
    results.push_back(std::move(t));
  }
  return results;
}

std::string
Executor::profileReport(const std::vector<const Executor *> &executors) {
  std::map<uint32_t, std::pair<double, int64_t>> profile;
  for (const Executor *e : executors)
    for (const auto &[op, entry] : e->profile) {
      profile[op].first += entry.first;
      profile[op].second += entry.second;
    }
  std::vector<std::pair<double, std::string>> rows;
  double total = 0;
  for (const auto &[op, entry] : profile)
    total += entry.first;
  for (const auto &[op, entry] : profile) {
    char line[160];
    std::snprintf(line, sizeof line, "  %-22s %10.3f ms %6.1f%% %8lld calls\n",
                  opName(static_cast<OpCode>(op)), entry.first * 1e3,
                  total > 0 ? 100.0 * entry.first / total : 0.0,
                  static_cast<long long>(entry.second));
    rows.push_back({entry.first, line});
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out;
  for (const auto &r : rows)
    out += r.second;
  return out;
}

} // namespace ds::rt
