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
    for (auto &[op, name] : collectRoutingSites(root)) {
      RoutingAttr routing = op.getRouting();
      FailureOr<const std::vector<int64_t> *> counts =
          siteCounts(*profile, op, name);
      if (failed(counts))
        return signalPassFailure();
      if (!*counts)
        continue;
      if (!routing.getSlots().empty()) {
        op.emitError("experts already placed (slots in #ds.routing): run "
                     "ds-prune-experts before ds-place-experts");
        return signalPassFailure();
      }
      SmallVector<int64_t> local =
          chooseKept(**counts, routing.getTopK(), minCount, keepTop);
      if (static_cast<int64_t>(local.size()) == routing.getNumRoutedExperts())
        continue;
      SmallVector<int64_t> kept;
      for (int64_t i : local)
        kept.push_back(routing.getKept().empty() ? i : routing.getKept()[i]);
      if (failed(rewriteExperts(op, local, kept, {}, "pruned")))
        return signalPassFailure();
    }
  }
};
} // namespace
