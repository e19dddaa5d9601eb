//===- PlaceExperts.cpp - expert placement from routing profiles ----------===//
//
// Lays each MoE block's routed experts out in weight slots, ep blocks of
// them, so that the expert-parallel processes' token loads (from a routing
// profile) are balanced, replicating the hottest experts: the compile-time
// counterpart of the runtime rebalancers of serving engines (EPLB).
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Utils/ExpertWeights.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <numeric>

#define DEBUG_TYPE "ds-place-experts"

namespace ds {
#define GEN_PASS_DEF_PLACEEXPERTSPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// Tokens per process when slot s carries counts[slots[s]] / copies of it.
SmallVector<double> loads(ArrayRef<int64_t> counts, ArrayRef<int64_t> slots,
                          int64_t ranks) {
  SmallVector<int64_t> copies(counts.size(), 0);
  for (int64_t e : slots)
    ++copies[e];
  SmallVector<double> load(ranks, 0.0);
  const int64_t per = static_cast<int64_t>(slots.size()) / ranks;
  for (auto [s, e] : llvm::enumerate(slots))
    load[s / per] += static_cast<double>(counts[e]) / copies[e];
  return load;
}

/// Max over mean of `load` (1: balanced); 0 when there is no load.
double imbalance(ArrayRef<double> load) {
  double total = std::accumulate(load.begin(), load.end(), 0.0);
  if (total <= 0)
    return 0;
  return *llvm::max_element(load) / (total / load.size());
}

/// The expert of each of counts.size() + replicas slots, `ranks` blocks
/// (see the pass description).
SmallVector<int64_t> place(ArrayRef<int64_t> counts, int64_t ranks,
                           int64_t replicas) {
  const int64_t experts = static_cast<int64_t>(counts.size());
  const int64_t per = (experts + replicas) / ranks;
  SmallVector<int64_t> copies(experts, 1);
  for (int64_t r = 0; r < replicas; ++r) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e)
      if (copies[e] < ranks &&
          (best < 0 || static_cast<double>(counts[e]) / copies[e] >
                           static_cast<double>(counts[best]) / copies[best]))
        best = e;
    ++copies[best]; // replicas <= experts * (ranks - 1) was checked
  }
  struct Copy {
    int64_t expert;
    double load;
  };
  SmallVector<Copy> items;
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t c = 0; c < copies[e]; ++c)
      items.push_back({e, static_cast<double>(counts[e]) / copies[e]});
  llvm::stable_sort(
      items, [](const Copy &a, const Copy &b) { return a.load > b.load; });
  SmallVector<double> load(ranks, 0.0);
  SmallVector<SmallVector<int64_t>> held(ranks);
  for (const Copy &c : items) {
    // The least loaded process with room, preferring one without a copy.
    int64_t best = -1;
    bool bestHas = true;
    for (int64_t r = 0; r < ranks; ++r) {
      if (static_cast<int64_t>(held[r].size()) == per)
        continue;
      bool has = llvm::is_contained(held[r], c.expert);
      if (best < 0 || (bestHas && !has) ||
          (has == bestHas && load[r] < load[best])) {
        best = r;
        bestHas = has;
      }
    }
    held[best].push_back(c.expert);
    load[best] += c.load;
  }
  SmallVector<int64_t> slots;
  for (SmallVector<int64_t> &h : held) {
    llvm::sort(h);
    slots.append(h.begin(), h.end());
  }
  return slots;
}

struct PlaceExpertsPass
    : public ds::impl::PlaceExpertsPassBase<PlaceExpertsPass> {
  using Base::Base;
  void runOnOperation() override {
    Operation *root = getOperation();
    if (profilePath.empty()) {
      root->emitError("ds-place-experts needs profile=<routing profile JSON>");
      return signalPassFailure();
    }
    if (ep < 1 || replicas < 0) {
      root->emitError() << "ds-place-experts: ep must be at least 1 and "
                           "replicas not negative, got "
                        << static_cast<int64_t>(ep) << " and "
                        << static_cast<int64_t>(replicas);
      return signalPassFailure();
    }
    FailureOr<RoutingProfile> profile =
        loadRoutingProfile(profilePath, root->getLoc());
    if (failed(profile))
      return signalPassFailure();
    for (auto &[op, name] : collectRoutingSites(root))
      if (failed(placeOne(op, name, *profile)))
        return signalPassFailure();
  }

  /// Sites already reported (@prefill and @decode share their names).
  llvm::StringSet<> printed;

  LogicalResult placeOne(MoEOp op, StringRef name,
                         const RoutingProfile &profile) {
    FailureOr<const std::vector<int64_t> *> found =
        siteCounts(profile, op, name);
    if (failed(found))
      return failure();
    if (!*found)
      return success(); // the profile does not cover this site
    // Plain values: pass options do not stream into diagnostics.
    const int64_t ep = this->ep, replicas = this->replicas;
    RoutingAttr routing = op.getRouting();
    if (!routing.getSlots().empty())
      return op.emitError("experts already placed (slots in #ds.routing)");
    if (op.getExpertGridAttr())
      return op.emitError("place experts before ds-partition splits them");
    const std::vector<int64_t> &counts = **found;
    const int64_t experts = routing.getNumRoutedExperts();
    if ((experts + replicas) % ep != 0)
      return op.emitError()
             << experts << " experts and " << replicas
             << " replicas do not make equal blocks for ep = " << ep;
    if (replicas > experts * (ep - 1))
      return op.emitError() << replicas << " replicas exceed one copy of each "
                            << "of the " << experts << " experts per process";
    if (replicas > 0 && routing.getTopK() < 2)
      return op.emitError("replicas need top_k >= 2 (a token's other experts "
                          "choose among them)");
    SmallVector<int64_t> slots = place(counts, ep, replicas);
    if (printBalance && printed.insert(name).second) {
      std::string before = "n/a (the experts do not split evenly)";
      if (experts % ep == 0) {
        SmallVector<int64_t> identity(experts);
        std::iota(identity.begin(), identity.end(), 0);
        before = llvm::formatv("{0:F2}", imbalance(loads(counts, identity, ep)))
                     .str();
      }
      llvm::errs() << llvm::formatv(
          "ds-place-experts: {0}: max/mean tokens per process over {1}: "
          "{2} in blocks, {3:F2} placed ({4} replicas)\n",
          name, ep, before, imbalance(loads(counts, slots, ep)), replicas);
    }
    return rewriteExperts(op, slots, routing.getKept(), slots, "placed");
  }
};
} // namespace
