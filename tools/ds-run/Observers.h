//===- Observers.h - what ds-run records beside the interpreter -----------===//
//
// Interpreter observers: a routing profile (experts chosen per MoE layer,
// for ds-prune-experts), an error report against a reference module (per
// output and per layer, with routing decisions compared or imposed), and
// activation ranges for static W8A8 calibration.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOOLS_DS_RUN_OBSERVERS_H
#define DS_TOOLS_DS_RUN_OBSERVERS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/tools/ds-run/Options.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/interpreter/Interpreter.h"
#include "ds/support/ReferenceKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <deque>
#include <map>

namespace ds::run {

using namespace mlir;

/// The routing of a routing op (null for other ops).
inline ds::RoutingAttr routingOf(Operation *op) {
  if (auto r = dyn_cast<ds::RouterOp>(op))
    return r.getRouting();
  if (auto r = dyn_cast<ds::FusedRouterOp>(op))
    return r.getRouting();
  if (auto m = dyn_cast<ds::MoEOp>(op))
    return m.getRouting();
  return {};
}

/// Per routing site (named by ds::getRoutingSiteName), selections per
/// expert.
struct RoutingProfile {
  /// Names are cached: computing one walks the function.
  const std::string &key(Operation *op) {
    auto it = names.find(op);
    if (it == names.end())
      it = names.try_emplace(op, ds::getRoutingSiteName(op)).first;
    return it->second;
  }
  llvm::DenseMap<Operation *, std::string> names;

  struct Site {
    int64_t tokens = 0, topK = 0;
    std::vector<int64_t> counts;
    /// Placed experts (#ds.routing slots): selections per weight slot.
    std::vector<int64_t> slotCounts;
  };
  std::map<std::string, Site> sites;

  /// `indices` number the selectable experts (before placement).
  void record(Operation *op, const ds::Tensor &indices, int64_t experts) {
    Site &site = sites[key(op)];
    site.counts.resize(experts, 0);
    site.topK = indices.shape.back();
    site.tokens += indices.numElements() / site.topK;
    for (int64_t e : indices.i)
      ++site.counts[e];
    ds::RoutingAttr routing = routingOf(op);
    ArrayRef<int64_t> slots =
        routing ? routing.getSlots() : ArrayRef<int64_t>();
    if (slots.empty())
      return;
    // Where the placement sends them: the load of each slot.
    ds::Tensor placed = indices;
    std::vector<int64_t> first(experts + 1), list(slots.size());
    if (!ds::reference::placeOnSlots(placed.i.data(), indices.shape[0],
                                     site.topK, slots.data(),
                                     static_cast<int64_t>(slots.size()),
                                     experts, first.data(), list.data()))
      return; // the interpreter has refused this routing already
    site.slotCounts.resize(slots.size(), 0);
    for (int64_t s : placed.i)
      ++site.slotCounts[s];
  }

  absl::Status write(const std::string &path) const {
    llvm::json::Array layers;
    for (const auto &[name, site] : sites) {
      llvm::json::Object layer{
          {"name", name},
          {"num_experts", static_cast<int64_t>(site.counts.size())},
          {"top_k", site.topK},
          {"tokens", site.tokens},
          {"counts", llvm::json::Array(site.counts)}};
      if (!site.slotCounts.empty())
        layer["slot_counts"] = llvm::json::Array(site.slotCounts);
      layers.push_back(std::move(layer));
    }
    return writeJson(path, llvm::json::Object{{"format", "ds-routing-profile"},
                                              {"version", 1},
                                              {"layers", std::move(layers)}});
  }
};

/// Sum of squared differences and of squared reference values.
struct ErrorSum {
  double diff2 = 0, ref2 = 0, maxAbs = 0;
  void add(const float *a, const float *ref, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      double d = double(a[i]) - double(ref[i]);
      diff2 += d * d;
      ref2 += double(ref[i]) * ref[i];
      maxAbs = std::max(maxAbs, std::fabs(d));
    }
  }
  double rel() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : 0.0; }
};

/// Keeps each decoder layer's output. The residual stream starts at the
/// embedding output; an update is an add that takes the current stream value
/// and gives one of its shape (arith.addf, a ds.fused_linear residual
/// epilogue, a ds.fused_elementwise holding the add). Every layer updates it
/// twice (attention, then MLP/MoE), so the (2n+2)-th update is layer n's
/// output. Following the stream (rather than locations, which a text round
/// trip drops) pairs the layers of any two forms of one model.
struct LayerCapture {
  SmallVector<int64_t> hidden;
  Value stream;
  int64_t updates = 0;
  std::map<std::string, std::vector<float>> layers;
  void observe(Value v, const ds::Tensor &t) {
    Operation *op = v.getDefiningOp();
    if (!op || t.isInt)
      return;
    if (isa<ds::EmbeddingOp>(op)) {
      hidden = t.shape;
      stream = v;
      return;
    }
    auto fused = dyn_cast<ds::FusedLinearOp>(op);
    bool add = isa<arith::AddFOp, ds::FusedElementwiseOp>(op) ||
               (fused && fused.getResidual() == stream);
    if (!add || !stream || t.shape != hidden ||
        !llvm::is_contained(op->getOperands(), stream))
      return;
    stream = v;
    if (++updates % 2 == 0)
      layers[llvm::formatv("layers.{0:d2}", updates / 2 - 1).str()] = t.f;
  }
  void reset() {
    layers.clear();
    updates = 0;
    stream = Value();
  }
};

/// The experts a routing op can select (empty: all), by which the
/// observed indices are numbered.
inline ArrayRef<int64_t> keptExperts(Operation *op) {
  ds::RoutingAttr routing = routingOf(op);
  return routing ? routing.getKept() : ArrayRef<int64_t>();
}

/// The error of a run against its reference run.
struct Report {
  /// --reference and --force-routing.
  std::string referenceFile;
  bool forceRouting = false;
  std::map<std::string, ErrorSum> outputs, layers;
  int64_t agree = 0, total = 0;
  LayerCapture mine, ref;
  /// The reference's routing decisions of the current step, in order.
  std::deque<ds::Tensor> refRouting;
  ds::Tensor imposed;
  int64_t decisions = 0, changed = 0;

  /// Set when an imposed expert is pruned from this module.
  std::string imposeError;

  /// `indices` of routing op `op` in global expert numbering.
  static ds::Tensor toGlobal(Operation *op, const ds::Tensor &indices) {
    ds::Tensor global = indices;
    if (ArrayRef<int64_t> kept = keptExperts(op); !kept.empty())
      for (int64_t &e : global.i)
        e = kept[e];
    return global;
  }
  void recordReference(Operation *op, const ds::Tensor &indices) {
    refRouting.push_back(toGlobal(op, indices));
  }
  /// The reference's decision in `op`'s numbering.
  const ds::Tensor *impose(Operation *op) {
    if (!forceRouting || refRouting.empty())
      return nullptr;
    imposed = refRouting.front();
    if (ArrayRef<int64_t> kept = keptExperts(op); !kept.empty())
      for (int64_t &e : imposed.i) {
        const int64_t *it = llvm::lower_bound(kept, e);
        if (it == kept.end() || *it != e) {
          imposeError = "--force-routing: the reference selects expert " +
                        std::to_string(e) + ", which this module has pruned";
          return nullptr;
        }
        e = it - kept.begin();
      }
    return &imposed;
  }
  /// Counts tokens whose set of experts differs from the reference's.
  void compareRouting(Operation *op, const ds::Tensor &local) {
    if (refRouting.empty())
      return;
    ds::Tensor indices = toGlobal(op, local);
    const ds::Tensor &r = refRouting.front();
    int64_t k = indices.shape.back();
    if (r.numElements() == indices.numElements())
      for (int64_t t = 0; t < indices.numElements() / k; ++t) {
        std::vector<int64_t> a(indices.i.begin() + t * k,
                               indices.i.begin() + (t + 1) * k),
            b(r.i.begin() + t * k, r.i.begin() + (t + 1) * k);
        llvm::sort(a);
        llvm::sort(b);
        ++decisions;
        changed += a != b;
      }
    refRouting.pop_front();
  }

  /// False when the two outputs' shapes differ.
  bool addOutput(const std::string &name, const HostTensor &a,
                 const HostTensor &r) {
    if (a.shape != r.shape)
      return false;
    std::vector<float> x = a.toFloats(), y = r.toFloats();
    outputs[name].add(x.data(), y.data(), x.size());
    return true;
  }
  /// After one pair of runs: compare and forget the captured layers.
  void addLayers() {
    for (auto &[name, v] : mine.layers) {
      auto it = ref.layers.find(name);
      if (it != ref.layers.end() && it->second.size() == v.size())
        layers[name].add(v.data(), it->second.data(), v.size());
    }
    mine.reset();
    ref.reset();
  }
  absl::Status write(const std::string &path) const {
    auto entry = [](const ErrorSum &e) {
      return llvm::json::Object{{"rel_l2", e.rel()}, {"max_abs", e.maxAbs}};
    };
    llvm::json::Object outs, lays;
    for (const auto &[name, e] : outputs)
      outs[name] = entry(e);
    llvm::json::Array layerList;
    for (const auto &[name, e] : layers) {
      llvm::json::Object o = entry(e);
      o["name"] = name;
      layerList.push_back(std::move(o));
    }
    llvm::json::Object root{{"format", "ds-error-report"},
                            {"version", 1},
                            {"reference", referenceFile},
                            {"outputs", std::move(outs)},
                            {"layers", std::move(layerList)}};
    if (total)
      root["top1_agreement"] = double(agree) / double(total);
    root["routing"] = llvm::json::Object{{"forced", forceRouting},
                                         {"decisions", decisions},
                                         {"changed", changed}};
    return writeJson(path, std::move(root));
  }
  void print() const {
    for (const auto &[name, e] : outputs)
      llvm::outs() << "error vs reference: " << name << " relative L2 "
                   << llvm::format("%.3e", e.rel()) << ", max abs "
                   << llvm::format("%.3e", e.maxAbs) << "\n";
    if (total)
      llvm::outs() << "error vs reference: greedy tokens agree " << agree << "/"
                   << total << "\n";
    llvm::outs() << "error vs reference: "
                 << (forceRouting ? "routing imposed; " : "")
                 << "token routings that differ " << changed << "/" << decisions
                 << "\n";
  }
};

/// Absolute maxima of GEMM inputs, by weight param name, and of the rows
/// written into each KV cache ("cache<i>": the function's i-th cache
/// argument, as ds-kv-cache-type and the plan number them).
struct Calibration {
  std::map<std::string, float> absmax;
  std::map<unsigned, float> cacheAbsmax;
  /// `v` (with value t) when it is the update of ds.cache_updates.
  void recordCacheUpdate(Value v, const ds::Tensor &t) {
    if (t.isInt)
      return;
    for (Operation *user : v.getUsers()) {
      auto update = dyn_cast<ds::CacheUpdateOp>(user);
      if (!update || update.getUpdate() != v)
        continue;
      Value cache = update.getCache();
      while (auto prev = cache.getDefiningOp<ds::CacheUpdateOp>())
        cache = prev.getCache();
      auto arg = dyn_cast<BlockArgument>(cache);
      if (!arg)
        continue;
      // Its place among the block's cache arguments.
      unsigned index = 0;
      for (BlockArgument a : arg.getOwner()->getArguments()) {
        if (a == arg)
          break;
        index += llvm::any_of(a.getUses(), [](OpOperand &use) {
          auto u = dyn_cast<ds::CacheUpdateOp>(use.getOwner());
          return u && use.get() == u.getCache();
        });
      }
      float m = 0.0f;
      for (float x : t.f)
        m = std::max(m, std::fabs(x));
      float &slot = cacheAbsmax[index];
      slot = std::max(slot, m);
    }
  }
  void record(Value weight, const ds::Tensor &input) {
    std::optional<ds::WeightSources> sources = ds::getWeightSources(weight);
    if (!sources)
      return;
    float m = 0.0f;
    for (float v : input.f)
      m = std::max(m, std::fabs(v));
    for (ds::ParamOp p : sources->params) {
      float &slot = absmax[p.getName().str()];
      slot = std::max(slot, m);
    }
  }
  absl::Status write(const std::string &path) const {
    llvm::json::Object inputs, caches;
    for (const auto &[name, m] : absmax)
      inputs[name] = double(m);
    for (const auto &[index, m] : cacheAbsmax)
      caches["cache" + std::to_string(index)] = double(m);
    return writeJson(path,
                     llvm::json::Object{{"format", "ds-activation-ranges"},
                                        {"version", 1},
                                        {"gemm_inputs", std::move(inputs)},
                                        {"kv_caches", std::move(caches)}});
  }
};

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_OBSERVERS_H
