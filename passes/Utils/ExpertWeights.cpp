//===- ExpertWeights.cpp - routing profiles and expert weight slices ------===//

#include "ds/passes/Utils/ExpertWeights.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

using namespace mlir;

namespace ds {

FailureOr<RoutingProfile> loadRoutingProfile(StringRef path, Location loc) {
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
  RoutingProfile profile;
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

namespace {
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
} // namespace

SmallVector<std::pair<MoEOp, std::string>>
collectRoutingSites(Operation *root) {
  SmallVector<std::pair<MoEOp, std::string>> sites;
  root->walk([&](MoEOp op) { sites.push_back({op, ""}); });
  for (auto &[op, name] : sites)
    name = getRoutingSiteName(op);
  return sites;
}

FailureOr<const std::vector<int64_t> *>
siteCounts(const RoutingProfile &profile, MoEOp op, StringRef name) {
  auto it = profile.find(name.str());
  if (it == profile.end())
    return static_cast<const std::vector<int64_t> *>(nullptr);
  const int64_t routed = op.getRouting().getNumRoutedExperts();
  if (static_cast<int64_t>(it->second.size()) != routed)
    return op.emitError() << "routing profile '" << name << "' has "
                          << it->second.size() << " experts, the op routes to "
                          << routed;
  return &it->second;
}

LogicalResult rewriteExperts(MoEOp op, ArrayRef<int64_t> local,
                             ArrayRef<int64_t> kept, ArrayRef<int64_t> slots,
                             StringRef done) {
  OpBuilder b(op);
  SmallVector<Value> weights;
  for (Value w : {op.getExpertGate(), op.getExpertUp(), op.getExpertDown()}) {
    Value sliced = selectExpertWeight(b, w, local);
    if (!sliced)
      return op.emitError() << "expert weights must be ds.param ops (or "
                               "splits of one) to be "
                            << done;
    weights.push_back(sliced);
  }
  op.getExpertGateMutable().assign(weights[0]);
  op.getExpertUpMutable().assign(weights[1]);
  op.getExpertDownMutable().assign(weights[2]);
  RoutingAttr r = op.getRouting();
  op.setRoutingAttr(RoutingAttr::get(
      op.getContext(), r.getNumExperts(), r.getTopK(), r.getScoring(),
      r.getNGroup(), r.getTopkGroup(), r.getGroupScore(), r.getNormTopkProb(),
      r.getNormEpsilon(), r.getRoutedScalingFactor(), kept, slots));
  return success();
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

} // namespace ds
