//===- Executor.cpp - artifact loading and plan execution -----------------===//
//
// Step layouts (ints / floats / weights), as codegen/CPU/PlanBuilder.cpp
// writes them:
//   Embedding    operands [ids]                 weights [table]
//   RMSNorm      operands [x]                   weights [w]   floats [eps]
//   Linear       operands [x (, residual)]      weights [W (, bias) (, norm)]
//                ints [hasNorm, hasBias, act or -1, gated, hasResidual,
//                      quant storage or -1, quant group
//                      (, input rounding, result rounding)]
//                (roundings: kernels::Round, for bf16 / f16 values)
//                floats [normEps, quant scale (0: dynamic)]; an I8Dot W
//                (W8A8) quantizes x itself, with floats[1] if static
//   Copy         operands [x] results [pieces]  ints [axis, sizes...]
//   Rope         operands [x, positions]        ints [dim, style]
//                floats [scaling, invFreq...]
//   CacheUpdate  operands [cache, positions, update]; result aliases cache
//   Attention    operands [q, k, v, positions] ints [window, cached]
//                floats [scale]; k, v: caches (cached = 1, rows of slot
//                slots[b]) or in-graph [batch, len, ...] (row b is b's)
//   MLAAttention operands [qNope, qPe, cKv, kPe, positions]
//                weights [W_uk transposed, W_uv] (packed, one per head)
//                (, per-K factors of W_ukᵀ [heads, dn] when it is int8)
//                ints [cached] floats [scale]
//   Router       operands [x] results [weights, indices]
//                weights [W (, bias)] ints [numExperts, topK, sigmoid, nGroup,
//                topkGroup, groupMax, normTopk, hasBias, kept...]
//                floats [normEps, scalingFactor]
//   MoE          operands [x, weights, indices] weights [gateUp, down]
//                ints [inter, act, in storage or -1, in group,
//                      hidden storage or -1, hidden group
//                      (, input rounding, result rounding)]
//                floats [in scale, hidden scale]
//   Generated    operands [x] weights [w] results [y]; kernel symbol;
//                ints [kind: 0 = RMSNorm]
//   Elementwise  operands [inputs...] results [out]; kernel symbol
//                ints: per input axis, 1 where the kernel broadcasts it
//   Alias        operands [x] results [y]; y shares x's buffer
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Executor.h"
#include "ds/rt/Status.h"
#include "ds/rt/ThreadPool.h"
#include "ds/support/Quant.h"

#include "absl/strings/str_cat.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <numeric>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ds::rt {
using json = nlohmann::json;

//===----------------------------------------------------------------------===//
// Model
//===----------------------------------------------------------------------===//

Model::~Model() {
  if (library)
    dlclose(library);
  if (mapping)
    munmap(mapping, mappingSize);
}

Model::Kernel Model::kernel(const std::string &symbol) const {
  auto it = kernels_.find(symbol);
  return it == kernels_.end() ? nullptr : it->second;
}

absl::Status Model::bind(SymbolResolver resolve) {
  // Weights: every entry inside the section and aligned for the kernels.
  for (const WeightInfo &w : plan_.weights) {
    if (w.offset > weightsSize || w.bytes > weightsSize - w.offset)
      return absl::DataLossError("weight '" + w.name +
                                 "' lies outside the weights section");
    if (w.offset % 64)
      return absl::DataLossError("weight '" + w.name + "' is not aligned");
    int64_t elems = 1;
    for (int64_t d : w.shape) {
      if (d < 0 || (d > 0 && elems > (int64_t{1} << 40) / d))
        return absl::DataLossError("weight '" + w.name + "' has a bad shape");
      elems *= d;
    }
    const uint8_t *data = weightsBase + w.offset;
    weightPtrs.push_back(data);
    std::vector<kernels::PackedWeight> views;
    if (w.layout == WeightLayout::Raw) {
      if (w.bytes != static_cast<uint64_t>(elems) * elemSize(w.type))
        return absl::DataLossError("weight '" + w.name + "' has " +
                                   std::to_string(w.bytes) +
                                   " bytes, its shape needs " +
                                   std::to_string(elems * elemSize(w.type)));
    } else {
      if (w.shape.size() != 2 && w.shape.size() != 3)
        return absl::DataLossError("packed weight '" + w.name +
                                   "' is not [N, K] or [E, N, K]");
      kernels::WeightFormat format = kernels::WeightFormat::F32;
      if (w.layout == WeightLayout::PackedI8)
        format = kernels::WeightFormat::I8;
      else if (w.layout == WeightLayout::PackedI4)
        format = kernels::WeightFormat::I4;
      else if (w.layout == WeightLayout::PackedF8)
        format = kernels::WeightFormat::F8;
      else if (w.layout == WeightLayout::PackedI8Dot)
        format = kernels::WeightFormat::I8Dot;
      else if (w.layout == WeightLayout::PackedS24)
        format = kernels::WeightFormat::S24;
      else if (w.layout == WeightLayout::PackedBF16)
        format = kernels::WeightFormat::BF16;
      else if (w.layout == WeightLayout::PackedF16)
        format = kernels::WeightFormat::F16;
      bool grouped = format == kernels::WeightFormat::I4 ||
                     format == kernels::WeightFormat::F8;
      if (grouped != (w.group > 0))
        return absl::DataLossError("packed weight '" + w.name +
                                   "' has a bad K group");
      int64_t experts = w.shape.size() == 3 ? w.shape[0] : 1;
      int64_t n = w.shape[w.shape.size() - 2], k = w.shape.back();
      uint64_t one =
          (kernels::packedWeightBytes(format, n, k, w.group) + 63) & ~63ULL;
      if (w.bytes != one * experts)
        return absl::DataLossError("packed weight '" + w.name +
                                   "' has the wrong size");
      for (int64_t e = 0; e < experts; ++e)
        views.push_back({format, n, k, data + e * one, w.group});
    }
    packedViews.push_back(std::move(views));
  }
  for (const FunctionPlan &f : plan_.functions)
    for (const Step &s : f.steps) {
      if ((s.op != OpCode::Elementwise && s.op != OpCode::Generated) ||
          kernels_.count(s.kernel))
        continue;
      void *sym = resolve ? resolve(s.kernel) : nullptr;
      if (!sym)
        return absl::NotFoundError("generated kernel '" + s.kernel + "' (for " +
                                   s.location + ") is not in the code");
      kernels_[s.kernel] = reinterpret_cast<Kernel>(sym);
    }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Model>>
Model::fromParts(ModelPlan plan, std::string weights, SymbolResolver resolve,
                 std::shared_ptr<void> keep) {
  std::shared_ptr<Model> m(new Model());
  m->plan_ = std::move(plan);
  // 64-byte alignment for the kernels: std::string's buffer is only 16.
  m->ownedWeights.resize(weights.size() + 64);
  auto base = reinterpret_cast<uintptr_t>(m->ownedWeights.data());
  size_t shift = (64 - base % 64) % 64;
  std::memcpy(m->ownedWeights.data() + shift, weights.data(), weights.size());
  m->weightsBase = reinterpret_cast<const uint8_t *>(base + shift);
  m->weightsSize = weights.size();
  m->keep = std::move(keep);
  if (absl::Status s = m->bind(std::move(resolve)); !s.ok())
    return s;
  return m;
}

namespace {
std::string hostFeatureSummary() {
  return kernels::hasAvx512() ? "avx512" : "avx2";
}
} // namespace

absl::StatusOr<std::shared_ptr<Model>> Model::load(const std::string &path,
                                                   const LoadOptions &options) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError("cannot open artifact " + path + ": " +
                               std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(path + " is not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    close(fd);
    return absl::DataLossError(
        path + ": not a ds artifact (too short for the header)");
  }
  void *map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED)
    return absl::UnavailableError("cannot map " + path);
  absl::StatusOr<std::shared_ptr<Model>> m =
      parse(static_cast<const uint8_t *>(map), size, path, options);
  if (!m.ok()) {
    munmap(map, size);
    return m.status();
  }
  (*m)->mapping = map;
  (*m)->mappingSize = size;
  return m;
}

absl::StatusOr<std::shared_ptr<Model>>
Model::parse(const uint8_t *bytes, size_t size, const std::string &path,
             const LoadOptions &options) {
  auto fail = [&](const std::string &what) {
    return absl::DataLossError(path + ": " + what);
  };
  if (size < 24)
    return fail("not a ds artifact (too short for the header)");
  std::shared_ptr<Model> m(new Model());
  if (std::memcmp(bytes, "DSARTIF1", 8) != 0)
    return fail("not a ds artifact (bad magic)");
  uint64_t len, sum;
  std::memcpy(&len, bytes + 8, 8);
  std::memcpy(&sum, bytes + 16, 8);
  if (len > size - 24)
    return fail("truncated: the header runs past the end of the file");
  std::string header(reinterpret_cast<const char *>(bytes + 24), len);
  if (options.verifyChecksums && fnv1a(header.data(), header.size()) != sum)
    return fail("corrupted: header checksum mismatch");
  TargetInfo target;
  absl::StatusOr<ModelPlan> plan = planFromJson(header, &target);
  if (!plan.ok())
    return fail(std::string(plan.status().message()));
  json j = json::parse(header, nullptr, false);
  const json &x = j["extra"];
  auto num = [&](const char *key) -> uint64_t {
    return x.contains(key) && x[key].is_number_unsigned()
               ? x[key].get<uint64_t>()
               : ~uint64_t{0};
  };
  uint64_t codeOff = num("code_offset"), codeBytes = num("code_bytes");
  uint64_t wOff = num("weights_offset"), wBytes = num("weights_bytes");
  if (codeOff > size || codeBytes > size - codeOff || wOff > size ||
      wBytes > size - wOff)
    return fail("truncated: sections run past the end of the file");
  if (options.verifyChecksums &&
      fnv1a(bytes + codeOff, codeBytes) != num("code_checksum"))
    return fail("corrupted: code checksum mismatch");
  if (options.verifyChecksums &&
      fnv1a(bytes + wOff, wBytes) != num("weights_checksum"))
    return fail("corrupted: weights checksum mismatch");
  if (target.features.find("+avx512f") != std::string::npos &&
      !kernels::hasAvx512())
    return absl::FailedPreconditionError(
        path + ": compiled for a CPU with AVX-512, this one has " +
        hostFeatureSummary());
  m->plan_ = std::move(*plan);
  m->weightsBase = bytes + wOff;
  m->weightsSize = wBytes;
  // The code: an ELF shared object, loaded from an anonymous file.
  if (codeBytes > 0 && options.loadCode) {
    int mfd = memfd_create("ds-kernels", MFD_CLOEXEC);
    if (mfd < 0)
      return absl::UnavailableError("memfd_create failed");
    const uint8_t *p = bytes + codeOff;
    uint64_t left = codeBytes;
    while (left > 0) {
      ssize_t n = write(mfd, p, left);
      if (n <= 0) {
        close(mfd);
        return absl::UnavailableError("cannot stage the artifact's code");
      }
      p += n;
      left -= static_cast<uint64_t>(n);
    }
    std::string fdPath = "/proc/self/fd/" + std::to_string(mfd);
    m->library = dlopen(fdPath.c_str(), RTLD_NOW | RTLD_LOCAL);
    close(mfd);
    if (!m->library) {
      const char *err = dlerror();
      return fail(std::string("the code section does not load: ") +
                  (err ? err : "unknown error"));
    }
  }
  void *lib = m->library;
  SymbolResolver resolve = [lib](const std::string &sym) -> void * {
    return lib ? dlsym(lib, sym.c_str()) : nullptr;
  };
  if (!options.loadCode && options.resolve)
    resolve = options.resolve;
  if (absl::Status s = m->bind(resolve); !s.ok())
    return fail(std::string(s.message()));
  return m;
}

//===----------------------------------------------------------------------===//
// KVCache
//===----------------------------------------------------------------------===//

absl::StatusOr<KVCache> KVCache::create(const ModelPlan &plan, int64_t slots) {
  if (slots <= 0)
    return absl::InvalidArgumentError("a KV cache needs at least one slot");
  KVCache c;
  c.slots = slots;
  for (const CacheInfo &info : plan.caches) {
    int64_t n = 1, total = 0;
    bool overflow = false;
    for (int64_t d : info.rowShape)
      overflow |= __builtin_mul_overflow(n, d, &n);
    overflow |=
        __builtin_mul_overflow(n, slots, &total) ||
        total > (int64_t{1} << 60) / static_cast<int64_t>(sizeof(float));
    if (overflow)
      return outOfMemoryError(absl::StrCat("KV cache '", info.name, "' for ",
                                           slots, " slots is too large"));
    c.slotFloats.push_back(n);
    try {
      c.storage.emplace_back(static_cast<size_t>(total), 0.0f);
    } catch (const std::bad_alloc &) {
      return outOfMemoryError(
          absl::StrCat("cannot allocate KV cache '", info.name, "' for ", slots,
                       " slots (", total * sizeof(float), " bytes)"));
    }
  }
  return c;
}

void KVCache::clearSlot(int64_t slot) {
  for (size_t i = 0; i < storage.size(); ++i)
    std::fill_n(storage[i].data() + slot * slotFloats[i], slotFloats[i], 0.0f);
}

//===----------------------------------------------------------------------===//
// Executor
//===----------------------------------------------------------------------===//

struct Executor::Prepared {
  std::vector<std::vector<int64_t>> shapes;
  /// Arena offset of each Temp value (or -1).
  std::vector<int64_t> offsets;
  /// Value whose storage each value uses (itself unless an alias).
  std::vector<int32_t> base;
  uint64_t arenaSize = 0;
  /// The first result's storage when no step reads it (only the caller
  /// does), so that its producer may compute just the rows a caller asks
  /// for (run's outputRows); -1 otherwise.
  int32_t selectableOutput = -1;
};

Executor::Executor(std::shared_ptr<const Model> model, ThreadPool *pool)
    : model(std::move(model)), pool(pool) {}
Executor::~Executor() = default;
Executor::Executor(Executor &&) noexcept = default;

namespace {
int64_t numElements(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

/// A rank-r memref descriptor as MLIR's C interface lays it out.
/// Memref descriptors (allocated, aligned, offset, sizes, strides) of a
/// generated kernel's arguments, in one reused buffer: no allocation per
/// call once it has grown.
class Descriptors {
public:
  /// Lays out descriptors for `args` (data, shape) and returns the kernel's
  /// argument array (one pointer per descriptor).
  void **
  build(const std::vector<std::pair<void *, const std::vector<int64_t> *>>
            &args) {
    size_t words = 0;
    for (const auto &a : args)
      words += 3 + 2 * a.second->size();
    storage.resize(words);
    pointers.resize(args.size());
    int64_t *at = storage.data();
    for (size_t k = 0; k < args.size(); ++k) {
      const std::vector<int64_t> &shape = *args[k].second;
      size_t r = shape.size();
      auto ptr = reinterpret_cast<int64_t>(args[k].first);
      at[0] = ptr;
      at[1] = ptr;
      at[2] = 0;
      int64_t stride = 1;
      for (size_t i = r; i-- > 0;) {
        at[3 + i] = shape[i];
        at[3 + r + i] = stride;
        stride *= shape[i];
      }
      pointers[k] = at;
      at += 3 + 2 * r;
    }
    return pointers.data();
  }

private:
  std::vector<int64_t> storage;
  std::vector<void *> pointers;
};

ds::QStorage toStorage(int64_t code) { return static_cast<ds::QStorage>(code); }

/// Quantize-dequantize rows of x in place as #ds.act_quant does.
void fakeQuant(float *x, int64_t rows, int64_t cols, int64_t storage,
               int64_t group, double scale) {
  std::vector<int64_t> shape{rows, cols};
  ds::QScheme q;
  q.storage = toStorage(storage);
  bool isStatic = scale > 0;
  q.block = {isStatic ? 0 : 1, group};
  ds::QuantizedTensor t =
      isStatic ? ds::quantizeWithScale(x, shape, q, static_cast<float>(scale))
               : ds::quantize(x, shape, q);
  std::vector<float> back = ds::dequantize(t);
  std::copy(back.begin(), back.end(), x);
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
    if (absl::Status st = checkShapes(step, p->shapes); !st.ok())
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
  absl::StatusOr<MemoryPlan> plan = planMemory(requests);
  if (!plan.ok())
    return plan.status();
  for (size_t i = 0; i < owners.size(); ++i)
    p->offsets[owners[i]] = static_cast<int64_t>(plan->offsets[i]);
  p->arenaSize = plan->arenaSize;
  const Prepared *out = p.get();
  prepared[{fn.name, key}] = std::move(p);
  return remember(out);
}

absl::Status
Executor::checkShapes(const Step &s,
                      const std::vector<std::vector<int64_t>> &shapes) const {
  // A kernel reads exactly what these say; a plan that does not hold
  // together (hand-made or damaged) stops here instead of in a kernel.
  auto shapeOf = [&](int32_t v) -> const std::vector<int64_t> & {
    return shapes[v];
  };
  auto count = [&](int32_t v) { return numElements(shapeOf(v)); };
  auto last = [&](int32_t v) {
    return shapeOf(v).empty() ? int64_t{1} : shapeOf(v).back();
  };
  auto rank = [&](int32_t v) { return shapeOf(v).size(); };
  auto bad = [](const std::string &what) {
    return absl::InvalidArgumentError("shapes do not fit: " + what);
  };
  const ModelPlan &mp = model->plan();
  auto weightCount = [&](int32_t w) {
    int64_t n = 1;
    for (int64_t d : mp.weights[w].shape)
      n *= d;
    return n;
  };
  switch (s.op) {
  case OpCode::Embedding: {
    const WeightInfo &t = mp.weights[s.weights[0]];
    if (count(s.results[0]) != count(s.operands[0]) * t.shape[1])
      return bad("embedding output");
    return absl::OkStatus();
  }
  case OpCode::RMSNorm:
    if (weightCount(s.weights[0]) != last(s.operands[0]) ||
        count(s.results[0]) != count(s.operands[0]))
      return bad("rms_norm weight or output");
    return absl::OkStatus();
  case OpCode::Linear: {
    const kernels::PackedWeight &w = model->packed(s.weights[0])[0];
    int32_t x = s.operands[0], y = s.results[0];
    int64_t rows = last(x) ? count(x) / last(x) : 0;
    int64_t n = s.ints[3] ? w.n / 2 : w.n;
    size_t wi = 1;
    if (last(x) != w.k || count(y) != rows * n || (s.ints[3] && w.n % 2))
      return bad("linear input, weight and output");
    if (s.ints[1] && weightCount(s.weights[wi++]) != w.n)
      return bad("linear bias");
    if (s.ints[0] && weightCount(s.weights[wi]) != w.k)
      return bad("linear norm weight");
    if (s.ints[4] && count(s.operands[1]) != count(y))
      return bad("linear residual");
    return absl::OkStatus();
  }
  case OpCode::Copy: {
    const auto &xs = shapeOf(s.operands[0]);
    int64_t axis = s.ints[0];
    if (axis >= static_cast<int64_t>(xs.size()))
      return bad("split axis");
    int64_t total = 0,
            rest = count(s.operands[0]) / std::max<int64_t>(xs[axis], 1);
    for (size_t r = 0; r < s.results.size(); ++r) {
      if (s.ints[1 + r] < 0 || count(s.results[r]) != rest * s.ints[1 + r])
        return bad("split piece");
      total += s.ints[1 + r];
    }
    if (total != xs[axis])
      return bad("split sizes");
    return absl::OkStatus();
  }
  case OpCode::Rope: {
    int64_t tokens = count(s.operands[1]), d = last(s.operands[0]);
    if (count(s.results[0]) != count(s.operands[0]) || s.ints[0] > d ||
        (tokens && count(s.operands[0]) % (tokens * std::max<int64_t>(d, 1))))
      return bad("rope input and positions");
    return absl::OkStatus();
  }
  case OpCode::CacheUpdate: {
    const auto &cs = shapeOf(s.operands[0]), &us = shapeOf(s.operands[2]);
    if (cs.size() < 2 || us.size() < 2 ||
        count(s.operands[1]) != us[0] * us[1] ||
        count(s.operands[2]) !=
            us[0] * us[1] *
                (count(s.operands[0]) / std::max<int64_t>(cs[0] * cs[1], 1)))
      return bad("cache_update cache, positions and update");
    return absl::OkStatus();
  }
  case OpCode::Attention: {
    int32_t q = s.operands[0], k = s.operands[1], v = s.operands[2];
    if (rank(q) != 4 || rank(k) != 4 || rank(v) != 4)
      return bad("attention ranks");
    const auto &qs = shapeOf(q), &ks = shapeOf(k), &vs = shapeOf(v);
    if (ks[2] <= 0 || qs[2] % ks[2] || qs[3] != ks[3] || vs[2] != ks[2] ||
        vs[1] != ks[1] || count(s.operands[3]) != qs[0] * qs[1] ||
        count(s.results[0]) != qs[0] * qs[1] * qs[2] * vs[3])
      return bad("attention heads, lengths or output");
    return absl::OkStatus();
  }
  case OpCode::MLAAttention: {
    for (int i = 0; i < 4; ++i)
      if (rank(s.operands[i]) != (i < 2 ? 4u : 3u))
        return bad("mla_attention ranks");
    const auto &ns = shapeOf(s.operands[0]), &ps = shapeOf(s.operands[1]);
    const auto &cs = shapeOf(s.operands[2]), &ks = shapeOf(s.operands[3]);
    const auto &uv = model->packed(s.weights[1]);
    if (ps[0] != ns[0] || ps[1] != ns[1] || ps[2] != ns[2] || ks[2] != ps[3] ||
        ks[1] != cs[1] || count(s.operands[4]) != ns[0] * ns[1] || uv.empty() ||
        uv[0].k != cs[2] ||
        count(s.results[0]) != ns[0] * ns[1] * ns[2] * uv[0].n)
      return bad("mla_attention queries, latents or output");
    return absl::OkStatus();
  }
  case OpCode::Router: {
    const kernels::PackedWeight &w = model->packed(s.weights[0])[0];
    int32_t x = s.operands[0];
    int64_t rows = last(x) ? count(x) / last(x) : 0;
    if (last(x) != w.k || w.n != s.ints[0] ||
        count(s.results[0]) != rows * s.ints[1] ||
        count(s.results[1]) != rows * s.ints[1] ||
        (s.ints[7] && weightCount(s.weights[1]) != s.ints[0]))
      return bad("router input, weight or outputs");
    return absl::OkStatus();
  }
  case OpCode::MoE: {
    const auto &gu = model->packed(s.weights[0]);
    const auto &down = model->packed(s.weights[1]);
    int32_t x = s.operands[0];
    int64_t h = last(x), rows = h ? count(x) / h : 0;
    int64_t topK = last(s.operands[2]);
    if (gu.empty() || gu.size() != down.size() || gu[0].k != h ||
        gu[0].n != 2 * s.ints[0] || down[0].k != s.ints[0] || down[0].n != h ||
        count(s.operands[1]) != rows * topK ||
        count(s.operands[2]) != rows * topK || count(s.results[0]) != rows * h)
      return bad("moe input, routing or expert weights");
    return absl::OkStatus();
  }
  case OpCode::Elementwise: {
    const auto &out = shapeOf(s.results[0]);
    size_t flag = 0;
    for (int32_t in : s.operands) {
      const auto &is = shapeOf(in);
      if (is.size() > out.size())
        return bad("elementwise input rank");
      size_t offset = out.size() - is.size();
      for (size_t a = 0; a < is.size(); ++a, ++flag) {
        bool broadcast = flag < s.ints.size() && s.ints[flag];
        if (broadcast ? is[a] != 1 : is[a] != out[offset + a])
          return bad("elementwise input " + std::to_string(a));
      }
    }
    if (flag != s.ints.size())
      return bad("elementwise broadcast flags");
    return absl::OkStatus();
  }
  case OpCode::Alias:
    if (count(s.results[0]) != count(s.operands[0]))
      return bad("reshape element count");
    return absl::OkStatus();
  case OpCode::Generated: // RMSNorm
    if (weightCount(s.weights[0]) != last(s.operands[0]) ||
        shapeOf(s.results[0]) != shapeOf(s.operands[0]))
      return bad("rms_norm weight or output");
    return absl::OkStatus();
  case OpCode::FakeQuant:
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HostTensor>>
Executor::run(const std::string &function,
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
  if (arena.size() < p.arenaSize) {
    absl::StatusOr<Arena> a = Arena::create(p.arenaSize);
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
        ptr[v] = arena.data() + p.offsets[v];
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

  auto F = [&](int32_t v) { return static_cast<float *>(ptr[v]); };
  auto I = [&](int32_t v) { return static_cast<int64_t *>(ptr[v]); };
  auto shapeOf = [&](int32_t v) -> const std::vector<int64_t> & {
    return p.shapes[v];
  };
  auto rowsOf = [&](int32_t v) {
    const auto &s = shapeOf(v);
    return s.empty() ? 1 : numElements(s) / std::max<int64_t>(s.back(), 1);
  };
  // Cache ops index slots per batch row: with B rows the slot table is the
  // caller's.
  const int64_t *slotTable = slots.data();
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

  for (const Step &s : fn->steps) {
    std::chrono::steady_clock::time_point stepStart;
    if (profiling)
      stepStart = std::chrono::steady_clock::now();
    struct Timer {
      Executor *self;
      const Step &step;
      std::chrono::steady_clock::time_point start;
      ~Timer() {
        if (!self->profiling)
          return;
        auto &slot = self->profile[static_cast<uint32_t>(step.op)];
        slot.first += std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
        ++slot.second;
      }
    } timer{this, s, stepStart};
    auto err = [&](const std::string &what) {
      return absl::InvalidArgumentError(s.location + ": " + what);
    };
    const size_t ni = s.ints.size();
    switch (s.op) {
    case OpCode::Alias:
    case OpCode::CacheUpdate:
      if (s.op == OpCode::CacheUpdate) {
        int32_t c = s.operands[0], pos = s.operands[1], upd = s.operands[2];
        const auto &cs = shapeOf(c);
        const auto &us = shapeOf(upd);
        int64_t maxLen = cs[1], row = numElements(cs) / (cs[0] * cs[1]);
        int64_t b = us[0], t = us[1];
        if (b != cs[0])
          return err(absl::StrCat("cache batch ", cs[0],
                                  " differs from the update's ", b));
        for (int64_t i = 0; i < b * t; ++i)
          if (I(pos)[i] < 0 || I(pos)[i] >= maxLen)
            return err(absl::StrCat("position ", I(pos)[i],
                                    " is outside the cache [0, ", maxLen, ")"));
        kernels::cacheUpdate(F(c), maxLen, row, slotTable, F(upd), I(pos), b,
                             t);
      }
      break;
    case OpCode::Embedding: {
      const WeightInfo &w = mp.weights[s.weights[0]];
      int32_t ids = s.operands[0];
      int64_t n = numElements(shapeOf(ids));
      int64_t bad = kernels::embedding(
          static_cast<const float *>(model->weightData(s.weights[0])),
          w.shape[0], w.shape[1], I(ids), n, F(s.results[0]));
      if (bad >= 0)
        return err(absl::StrCat("token id ", I(ids)[bad],
                                " is outside the vocabulary [0, ", w.shape[0],
                                ")"));
      break;
    }
    case OpCode::RMSNorm: {
      int32_t x = s.operands[0];
      kernels::rmsNorm(
          F(x), static_cast<const float *>(model->weightData(s.weights[0])),
          rowsOf(x), shapeOf(x).back(), s.floats[0], F(s.results[0]));
      break;
    }
    case OpCode::Linear: {
      int32_t x = s.operands[0], y = s.results[0];
      bool hasNorm = s.ints[0], hasBias = s.ints[1], gated = s.ints[3],
           hasResidual = s.ints[4];
      int64_t act = s.ints[2], qStorage = s.ints[5], qGroup = s.ints[6];
      // bf16 / f16 input and result (values rounded where the interpreter
      // rounds them; absent in plans with f32 only).
      auto inRound = static_cast<kernels::Round>(ni > 7 ? s.ints[7] : 0);
      auto outRound = static_cast<kernels::Round>(ni > 8 ? s.ints[8] : 0);
      kernels::PackedWeight w = model->packed(s.weights[0])[0];
      // W8A8: the GEMM quantizes its input (static scale if calibrated).
      if (w.format == kernels::WeightFormat::I8Dot)
        w.inputScale = static_cast<float>(s.floats[1]);
      int64_t m = rowsOf(x), k = shapeOf(x).back();
      size_t wi = 1;
      const float *bias =
          hasBias
              ? static_cast<const float *>(model->weightData(s.weights[wi++]))
              : nullptr;
      const float *in = F(x);
      thread_local std::vector<float> scratch, wide, picked;
      if (y == selectedValue && !hasResidual) {
        // Only the wanted rows (row-wise norm and GEMM: each row's result
        // is the same as in the full product, bit for bit).
        const int64_t count = static_cast<int64_t>(outputRows->size());
        if (static_cast<int64_t>(picked.size()) < count * k)
          picked.resize(count * k);
        for (int64_t i = 0; i < count; ++i)
          std::copy_n(in + (*outputRows)[i] * k, k, picked.data() + i * k);
        in = picked.data();
        m = count;
        selectedDone = true;
      }
      if (hasNorm || qStorage >= 0) {
        if (static_cast<int64_t>(scratch.size()) < m * k)
          scratch.resize(m * k);
        if (hasNorm)
          kernels::rmsNorm(
              in, static_cast<const float *>(model->weightData(s.weights[wi])),
              m, k, s.floats[0], scratch.data(), inRound);
        else
          std::copy_n(in, m * k, scratch.data());
        if (qStorage >= 0)
          fakeQuant(scratch.data(), m, k, qStorage, qGroup, s.floats[1]);
        in = scratch.data();
      }
      float *out = F(y);
      int64_t n = w.n;
      if (gated) {
        if (static_cast<int64_t>(wide.size()) < m * n)
          wide.resize(m * n);
        kernels::gemm(in, m, k, w, bias, wide.data(), n, pool);
        kernels::roundValues(wide.data(), m * n, outRound);
        kernels::glu(wide.data(), m, n / 2, static_cast<kernels::Act>(act),
                     out);
        n /= 2;
      } else {
        kernels::gemm(in, m, k, w, bias, out, n, pool);
        if (act >= 0) {
          kernels::roundValues(out, m * n, outRound);
          for (int64_t i = 0; i < m * n; ++i)
            out[i] = kernels::activate(static_cast<kernels::Act>(act), out[i]);
        }
      }
      if (hasResidual) {
        kernels::roundValues(out, m * n, outRound);
        const float *r = F(s.operands[1]);
        for (int64_t i = 0; i < m * n; ++i)
          out[i] = r[i] + out[i];
      }
      kernels::roundValues(out, m * n, outRound);
      break;
    }
    case OpCode::Copy: {
      int32_t x = s.operands[0];
      const auto &xs = shapeOf(x);
      int64_t axis = s.ints[0];
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < axis; ++d)
        outer *= xs[d];
      for (size_t d = axis + 1; d < xs.size(); ++d)
        inner *= xs[d];
      int64_t width = xs[axis] * inner, at = 0;
      for (size_t r = 0; r < s.results.size(); ++r) {
        int64_t piece = s.ints[1 + r] * inner;
        float *dst = F(s.results[r]);
        const float *src = F(x) + at;
        for (int64_t o = 0; o < outer; ++o)
          std::memcpy(dst + o * piece, src + o * width, piece * sizeof(float));
        at += piece;
      }
      break;
    }
    case OpCode::Rope: {
      int32_t x = s.operands[0], pos = s.operands[1], y = s.results[0];
      const auto &xs = shapeOf(x);
      int64_t tokens = numElements(shapeOf(pos));
      int64_t dFull = xs.back();
      int64_t heads = tokens ? numElements(xs) / (tokens * dFull) : 0;
      std::vector<float> invFreq(s.floats.begin() + 1, s.floats.end());
      if (F(y) != F(x))
        std::copy_n(F(x), numElements(xs), F(y));
      kernels::rope(F(y), tokens, heads, dFull, s.ints[0], invFreq.data(),
                    static_cast<float>(s.floats[0]),
                    static_cast<int32_t>(s.ints[1]), I(pos));
      break;
    }
    case OpCode::Attention: {
      int32_t q = s.operands[0], kc = s.operands[1], vc = s.operands[2],
              pos = s.operands[3];
      const auto &qs = shapeOf(q), &ks = shapeOf(kc), &vs = shapeOf(vc);
      int64_t maxLen = ks[1];
      for (int64_t i = 0; i < qs[0] * qs[1]; ++i)
        if (I(pos)[i] < 0 || I(pos)[i] >= maxLen)
          return err(absl::StrCat("position ", I(pos)[i],
                                  " is outside the key/value length [0, ",
                                  maxLen, ")"));
      std::vector<int64_t> identity;
      const int64_t *rows = slotTable;
      if (!s.ints[1]) {
        identity.resize(qs[0]);
        std::iota(identity.begin(), identity.end(), 0);
        rows = identity.data();
        if (ks[0] != qs[0] || vs[0] != qs[0] || vs[1] != maxLen)
          return err("keys, values and queries disagree on batch or length");
      }
      kernels::attention(F(q), qs[0], qs[1], qs[2], qs[3], F(kc), F(vc), maxLen,
                         ks[2], vs[3], rows, I(pos), s.ints[0], s.floats[0],
                         F(s.results[0]), pool);
      break;
    }
    case OpCode::MLAAttention: {
      int32_t qn = s.operands[0], qp = s.operands[1], ckv = s.operands[2],
              kpe = s.operands[3], pos = s.operands[4];
      const auto &ns = shapeOf(qn), &ps = shapeOf(qp), &cs = shapeOf(ckv);
      const auto &ukT = model->packed(s.weights[0]);
      const auto &uv = model->packed(s.weights[1]);
      int64_t heads = ns[2], dn = ns[3];
      if (static_cast<int64_t>(ukT.size()) != heads ||
          static_cast<int64_t>(uv.size()) != heads || ukT[0].k != dn ||
          ukT[0].n != cs[2])
        return err("MLA projections do not match the queries");
      int64_t dv = uv[0].n;
      int64_t maxLen = cs[1];
      const float *kScales = nullptr;
      if (s.weights.size() > 2) {
        if (mp.weights[s.weights[2]].shape != std::vector<int64_t>{heads, dn})
          return err("MLA query scales do not match the queries");
        kScales = static_cast<const float *>(model->weightData(s.weights[2]));
      }
      for (int64_t i = 0; i < ns[0] * ns[1]; ++i)
        if (I(pos)[i] < 0 || I(pos)[i] >= maxLen)
          return err(absl::StrCat("position ", I(pos)[i],
                                  " is outside the latent cache length [0, ",
                                  maxLen, ")"));
      std::vector<int64_t> identity;
      const int64_t *rows = slotTable;
      if (!s.ints[0]) {
        identity.resize(ns[0]);
        std::iota(identity.begin(), identity.end(), 0);
        rows = identity.data();
        if (cs[0] != ns[0] || shapeOf(kpe)[0] != ns[0] ||
            shapeOf(kpe)[1] != maxLen)
          return err("latents and queries disagree on batch or length");
      }
      kernels::mlaAttentionPacked(F(qn), F(qp), ns[0], ns[1], heads, dn, ps[3],
                                  F(ckv), F(kpe), maxLen, cs[2], ukT.data(),
                                  uv.data(), dv, rows, I(pos), s.floats[0],
                                  F(s.results[0]), pool, kScales);
      break;
    }
    case OpCode::Router: {
      int32_t x = s.operands[0];
      int64_t n = rowsOf(x), h = shapeOf(x).back();
      kernels::RouterConfig rc;
      rc.numExperts = s.ints[0];
      rc.topK = s.ints[1];
      rc.sigmoid = s.ints[2];
      rc.nGroup = s.ints[3];
      rc.topkGroup = s.ints[4];
      rc.groupScoreMax = s.ints[5];
      rc.normTopkProb = s.ints[6];
      bool hasBias = s.ints[7];
      rc.numKept = static_cast<int64_t>(s.ints.size()) - 8;
      rc.kept = rc.numKept ? s.ints.data() + 8 : nullptr;
      rc.normEpsilon = s.floats[0];
      rc.scalingFactor = s.floats[1];
      thread_local std::vector<float> logits;
      if (static_cast<int64_t>(logits.size()) < n * rc.numExperts)
        logits.resize(n * rc.numExperts);
      kernels::gemm(F(x), n, h, model->packed(s.weights[0])[0], nullptr,
                    logits.data(), rc.numExperts, pool);
      const float *bias =
          hasBias ? static_cast<const float *>(model->weightData(s.weights[1]))
                  : nullptr;
      kernels::route(logits.data(), bias, n, rc, F(s.results[0]),
                     static_cast<int32_t *>(ptr[s.results[1]]));
      break;
    }
    case OpCode::MoE: {
      int32_t x = s.operands[0], wts = s.operands[1], idx = s.operands[2];
      int64_t n = rowsOf(x), h = shapeOf(x).back();
      int64_t topK = shapeOf(idx).back();
      const auto &gu = model->packed(s.weights[0]);
      const auto &down = model->packed(s.weights[1]);
      const float *in = F(x);
      thread_local std::vector<float> quantized;
      if (s.ints[2] >= 0) {
        quantized.assign(in, in + n * h);
        fakeQuant(quantized.data(), n, h, s.ints[2], s.ints[3], s.floats[0]);
        in = quantized.data();
      }
      int64_t bad = kernels::moeExperts(
          in, n, h, F(wts), static_cast<const int32_t *>(ptr[idx]), topK,
          static_cast<int64_t>(gu.size()), gu.data(), down.data(), s.ints[0],
          static_cast<kernels::Act>(s.ints[1]), F(s.results[0]), pool,
          s.ints[4] < 0 ? std::function<void(float *, int64_t, int64_t)>()
                        : [&](float *rows, int64_t count, int64_t cols) {
                            fakeQuant(rows, count, cols, s.ints[4], s.ints[5],
                                      s.floats[1]);
                          },
          static_cast<kernels::Round>(ni > 6 ? s.ints[6] : 0));
      if (bad != -1)
        return err(absl::StrCat("expert index ", bad, " is outside [0, ",
                                gu.size(), ")"));
      kernels::roundValues(F(s.results[0]), n * h,
                           static_cast<kernels::Round>(ni > 7 ? s.ints[7] : 0));
      break;
    }
    case OpCode::Generated:
    case OpCode::Elementwise: {
      thread_local std::vector<std::pair<void *, const std::vector<int64_t> *>>
          args;
      thread_local Descriptors descs;
      args.clear();
      for (int32_t o : s.operands)
        args.emplace_back(ptr[o], &shapeOf(o));
      for (int32_t w : s.weights)
        args.emplace_back(const_cast<void *>(model->weightData(w)),
                          &mp.weights[w].shape);
      args.emplace_back(ptr[s.results[0]], &shapeOf(s.results[0]));
      model->kernel(s.kernel)(descs.build(args));
      break;
    }
    case OpCode::FakeQuant:
      return err("activation quantization outside a GEMM is not supported");
    }
  }

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

namespace {
const char *opName(OpCode op) {
  switch (op) {
  case OpCode::Embedding:
    return "embedding";
  case OpCode::RMSNorm:
    return "rms_norm";
  case OpCode::Linear:
    return "linear";
  case OpCode::Copy:
    return "split (copy)";
  case OpCode::Rope:
    return "rope";
  case OpCode::CacheUpdate:
    return "cache_update";
  case OpCode::Attention:
    return "attention";
  case OpCode::MLAAttention:
    return "mla_attention";
  case OpCode::Router:
    return "router";
  case OpCode::MoE:
    return "moe experts";
  case OpCode::Elementwise:
    return "generated elementwise";
  case OpCode::FakeQuant:
    return "fake quant";
  case OpCode::Alias:
    return "alias";
  case OpCode::Generated:
    return "generated (rms_norm)";
  }
  return "?";
}
} // namespace

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
