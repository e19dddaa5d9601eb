//===- PruneExperts.cpp - drop rarely routed experts ----------------------===//
//
// Applies a routing profile to ds.moe ops: shrinks the stacked expert weights
// to the kept experts (ds.param select) and records the kept set in the
// routing attribute so the router cannot select the others.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <map>
#include <numeric>

#define DEBUG_TYPE "ds-prune-experts"

namespace ds {
#define GEN_PASS_DEF_PRUNEEXPERTSPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

using Profile = std::map<std::string, std::vector<int64_t>>;

FailureOr<Profile> loadProfile(StringRef path, Location loc) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return emitError(loc) << "cannot read routing profile '" << path
                          << "': " << buffer.getError().message();
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*buffer)->getBuffer());
  if (!json)
    return emitError(loc) << path << ": not valid JSON: "
                          << llvm::toString(json.takeError());
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *layers = root ? root->getArray("layers") : nullptr;
  if (!root || root->getString("format") != "ds-routing-profile" || !layers)
    return emitError(loc) << path << ": not a ds routing profile";
  Profile profile;
  for (const llvm::json::Value &layer : *layers) {
    const llvm::json::Object *o = layer.getAsObject();
    std::optional<StringRef> name = o ? o->getString("name") : std::nullopt;
    const llvm::json::Array *counts = o ? o->getArray("counts") : nullptr;
    if (!name || !counts)
      return emitError(loc) << path << ": a layer lacks 'name' or 'counts'";
    std::vector<int64_t> &c = profile[name->str()];
    for (const llvm::json::Value &v : *counts) {
      std::optional<int64_t> n = v.getAsInteger();
      if (!n || *n < 0)
        return emitError(loc)
               << path << ": layer '" << *name << "' has a bad count";
      c.push_back(*n);
    }
  }
  return profile;
}

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

/// The expert weight `v` restricted to `local` slices, or null if `v` is
/// not a ds.param (possibly through a ds.split of a fused gate/up param).
Value selectSlices(OpBuilder &b, Value v, ArrayRef<int64_t> local) {
  auto param = v.getDefiningOp<ParamOp>();
  if (!param || param.isSharded())
    return {};
  SmallVector<int64_t> select;
  for (int64_t i : local)
    select.push_back(param.getSourceIndex(i));
  RankedTensorType logical = getLogicalTensorType(param.getType());
  SmallVector<int64_t> shape(logical.getShape());
  shape[0] = local.size();
  Type type = logical.clone(shape);
  if (auto q = dyn_cast<QTensorType>(param.getType()))
    type = QTensorType::get(b.getContext(), shape, q.getStorageType(),
                            q.getExpressedType(), q.getBlock());
  else if (auto sp = dyn_cast<Sparse24Type>(param.getType()))
    type = Sparse24Type::get(b.getContext(), shape, sp.getElementType());
  b.setInsertionPointAfter(param);
  return ParamOp::create(b, param.getLoc(), type, param.getNameAttr(),
                         b.getDenseI64ArrayAttr(select), param.getScalesAttr(),
                         param.getZeroPointsAttr(), param.getMetaAttr(),
                         FlatSymbolRefAttr(), shard::GridAxesArrayAttr());
}

Value selectExpertWeight(OpBuilder &b, Value v, ArrayRef<int64_t> local) {
  if (Value direct = selectSlices(b, v, local))
    return direct;
  auto split = v.getDefiningOp<SplitOp>();
  if (!split || split.getAxis() == 0)
    return {};
  Value source = selectSlices(b, split.getInput(), local);
  if (!source)
    return {};
  b.setInsertionPointAfterValue(source);
  auto newSplit = SplitOp::create(b, split.getLoc(), source, split.getAxis(),
                                  split.getSizes());
  return newSplit.getResult(cast<OpResult>(v).getResultNumber());
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
    FailureOr<Profile> profile = loadProfile(profilePath, root->getLoc());
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
          routing.getNormEpsilon(), routing.getRoutedScalingFactor(), kept);
      op.getExpertGateMutable().assign(weights[0]);
      op.getExpertUpMutable().assign(weights[1]);
      op.getExpertDownMutable().assign(weights[2]);
      op.setRoutingAttr(newRouting);
    }
  }
};
} // namespace
