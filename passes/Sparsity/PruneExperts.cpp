//===- PruneExperts.cpp - drop rarely routed experts ----------------------===//
//
// Applies a routing profile to ds.moe ops: shrinks the stacked expert weights
// to the kept experts (ds.param select) and records the kept set in the
// routing attribute so the router cannot select the others.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Utils/ExpertWeights.h"

#include "mlir/IR/Builders.h"

#include <numeric>

#define DEBUG_TYPE "ds-prune-experts"

namespace ds {
#define GEN_PASS_DEF_PRUNEEXPERTSPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// Local (routed-space) indices of the experts to keep, ascending.
SmallVector<int64_t> chooseKept(ArrayRef<int64_t> counts, int64_t topK,
                                int64_t minCount, int64_t keepTop) {
  SmallVector<int64_t> order(counts.size());
  std::iota(order.begin(), order.end(), 0);
  llvm::stable_sort(
      order, [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  int64_t limit = keepTop > 0 ? keepTop : static_cast<int64_t>(counts.size());
  SmallVector<int64_t> kept;
  for (int64_t e : order) {
    int64_t n = static_cast<int64_t>(kept.size());
    if (n >= std::max(limit, topK))
      break;
    if (counts[e] >= minCount || n < topK)
      kept.push_back(e);
  }
  llvm::sort(kept);
  return kept;
}

struct PruneExpertsPass
    : public ds::impl::PruneExpertsPassBase<PruneExpertsPass> {
  using Base::Base;
  void runOnOperation() override {
    Operation *root = getOperation();
    if (profilePath.empty()) {
      root->emitError("ds-prune-experts needs profile=<routing profile JSON>");
      return signalPassFailure();
    }
    FailureOr<RoutingProfile> profile =
        loadRoutingProfile(profilePath, root->getLoc());
    if (failed(profile))
      return signalPassFailure();
    SmallVector<MoEOp> moes;
    root->walk([&](MoEOp op) { moes.push_back(op); });
    // Names first: rewriting must not shift the ordinals of later sites.
    SmallVector<std::string> names;
    for (MoEOp op : moes)
      names.push_back(getRoutingSiteName(op));
    for (auto [op, name] : llvm::zip(moes, names)) {
      auto it = profile->find(name);
      if (it == profile->end())
        continue;
      RoutingAttr routing = op.getRouting();
      if (!routing.getSlots().empty()) {
        op.emitError("experts already placed (slots in #ds.routing): run "
                     "ds-prune-experts before ds-place-experts");
        return signalPassFailure();
      }
      int64_t routed = routing.getNumRoutedExperts();
      if (static_cast<int64_t>(it->second.size()) != routed) {
        op.emitError() << "routing profile '" << name << "' has "
                       << it->second.size() << " experts, the op routes to "
                       << routed;
        return signalPassFailure();
      }
      SmallVector<int64_t> local =
          chooseKept(it->second, routing.getTopK(), minCount, keepTop);
      if (static_cast<int64_t>(local.size()) == routed)
        continue;
      OpBuilder b(op);
      SmallVector<Value> weights;
      for (Value w :
           {op.getExpertGate(), op.getExpertUp(), op.getExpertDown()}) {
        Value pruned = selectExpertWeight(b, w, local);
        if (!pruned) {
          op.emitError("expert weights must be ds.param ops (or splits of "
                       "one) to be pruned");
          return signalPassFailure();
        }
        weights.push_back(pruned);
      }
      SmallVector<int64_t> kept;
      for (int64_t i : local)
        kept.push_back(routing.getKept().empty() ? i : routing.getKept()[i]);
      auto newRouting = RoutingAttr::get(
          &getContext(), routing.getNumExperts(), routing.getTopK(),
          routing.getScoring(), routing.getNGroup(), routing.getTopkGroup(),
          routing.getGroupScore(), routing.getNormTopkProb(),
          routing.getNormEpsilon(), routing.getRoutedScalingFactor(), kept,
          ArrayRef<int64_t>());
      op.getExpertGateMutable().assign(weights[0]);
      op.getExpertUpMutable().assign(weights[1]);
      op.getExpertDownMutable().assign(weights[2]);
      op.setRoutingAttr(newRouting);
    }
  }
};
} // namespace
