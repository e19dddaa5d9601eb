//===- PipelineStages.cpp - a function cut into pipeline stages -----------===//
//
// The cut: ops are numbered in the function's order; weights, constants and
// what they and the (non-cache) arguments alone compute are free (repeated
// in each stage that needs them); every other value crosses each cut
// between its definition and its last use. Stage k starts between the
// attention ops of layers k * L / P - 1 and k * L / P, where the fewest
// values cross. A stage's function clones its ops in order, receives the
// values crossing into it and returns those crossing out (the residual
// stream; a value crossing several cuts passes through the stages between).
//
//===----------------------------------------------------------------------===//

#include "ds/passes/Utils/PipelineStages.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSSharding.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace ds;

namespace {

/// An argument some ds.cache_update writes (a KV cache): it belongs to the
/// stage of the layer that updates it.
bool isCacheArgument(BlockArgument arg) {
  return llvm::any_of(arg.getUses(), [](OpOperand &use) {
    auto update = dyn_cast<CacheUpdateOp>(use.getOwner());
    return update && update.getCache() == use.get();
  });
}

/// A nonfree value and the last position that uses it (the return aside).
struct Live {
  Value value;
  int64_t def, lastUse;
};

} // namespace

FailureOr<StagedFunction> ds::splitIntoStages(func::FuncOp fn, int64_t stages) {
  Block &body = fn.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  SmallVector<Operation *> ops;
  llvm::DenseMap<Operation *, int64_t> pos;
  for (Operation &op : body.without_terminator()) {
    // Uses inside regions would hide from the cut's bookkeeping.
    if (op.getNumRegions() != 0)
      return op.emitOpError("ds-partition: pipeline stages cut functions "
                            "of ops without regions only");
    pos[&op] = static_cast<int64_t>(ops.size());
    ops.push_back(&op);
  }
  // Free ops: weights, constants and what is computed from them and the
  // (non-cache) arguments alone. Every stage that needs one repeats it.
  llvm::DenseSet<Operation *> freeOps;
  auto isFree = [&](Value v) {
    if (auto a = dyn_cast<BlockArgument>(v))
      return !isCacheArgument(a);
    return freeOps.contains(v.getDefiningOp());
  };
  for (Operation *op : ops)
    if ((isa<ParamOp, ConcatWeightsOp, arith::ConstantOp>(op) ||
         isMemoryEffectFree(op)) &&
        llvm::all_of(op->getOperands(), isFree))
      freeOps.insert(op);

  SmallVector<Operation *> layers;
  for (Operation *op : ops)
    if (isa<AttentionOp, MLAAttentionOp>(op))
      layers.push_back(op);
  const int64_t numLayers = static_cast<int64_t>(layers.size());
  if (numLayers < stages)
    return fn.emitError() << "ds-partition: @" << fn.getSymName() << " has "
                          << numLayers << " layers (attention ops), fewer "
                          << "than pp = " << stages << " pipeline stages";

  // Every value of a nonfree op and its last use.
  SmallVector<Live> live;
  for (Operation *op : ops) {
    if (freeOps.contains(op))
      continue;
    for (Value v : op->getResults()) {
      int64_t last = -1;
      for (Operation *user : v.getUsers())
        if (user != ret.getOperation())
          last = std::max(last, pos.lookup(user));
      live.push_back({v, pos[op], last});
    }
  }
  auto crossing = [&](int64_t cut) {
    SmallVector<Value> out;
    for (const Live &l : live)
      if (l.def < cut && l.lastUse >= cut)
        out.push_back(l.value);
    return out;
  };
  // Stage k starts at layer k * L / stages: the cut between that layer's
  // attention and the previous one's where the fewest values cross (the
  // residual stream alone, between two layers), the latest among equals.
  SmallVector<int64_t> cuts = {0};
  for (int64_t k = 1; k < stages; ++k) {
    const int64_t j = k * numLayers / stages;
    int64_t best = -1;
    size_t fewest = SIZE_MAX;
    for (int64_t p = pos[layers[j - 1]] + 1; p <= pos[layers[j]]; ++p) {
      size_t n = crossing(p).size();
      if (n <= fewest) {
        fewest = n;
        best = p;
      }
    }
    cuts.push_back(best);
  }
  cuts.push_back(static_cast<int64_t>(ops.size()));
  auto stageOf = [&](Operation *op) {
    int64_t p = pos.lookup(op);
    return static_cast<int64_t>(std::upper_bound(cuts.begin(), cuts.end(), p) -
                                cuts.begin() - 1);
  };

  // The stage returning each whole result.
  SmallVector<int64_t> resultStage;
  for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
    if (isa<BlockArgument>(v))
      return fn.emitError() << "ds-partition: @" << fn.getSymName()
                            << " returns its argument as result " << i
                            << "; pipeline stages cannot split that";
    resultStage.push_back(freeOps.contains(v.getDefiningOp())
                              ? stages - 1
                              : stageOf(v.getDefiningOp()));
  }

  StagedFunction staged;
  staged.name = fn.getSymName().str();
  staged.type = fn.getFunctionType();
  staged.argAttrs = fn.getAllArgAttrs();
  staged.resultAttrs = fn.getAllResultAttrs();
  staged.loc = fn.getLoc();
  MLIRContext *ctx = fn.getContext();
  OpBuilder b(ctx);
  Operation *after = fn;
  for (int64_t k = 0; k < stages; ++k) {
    auto inStage = [&](Operation *op) {
      return !freeOps.contains(op) && stageOf(op) == k;
    };
    // The free ops this stage repeats: those its own ops and its returned
    // free values reach.
    llvm::DenseSet<Operation *> needed;
    SmallVector<Operation *> work;
    auto need = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (def && freeOps.contains(def) && needed.insert(def).second)
        work.push_back(def);
    };
    for (Operation *op : ops)
      if (inStage(op))
        for (Value v : op->getOperands())
          need(v);
    for (auto [i, v] : llvm::enumerate(ret.getOperands()))
      if (resultStage[i] == k)
        need(v);
    while (!work.empty()) {
      Operation *op = work.pop_back_val();
      for (Value v : op->getOperands())
        need(v);
    }

    SmallVector<Type> argTypes, resultTypes;
    SmallVector<int64_t> argOrigin, resultOrigin;
    SmallVector<DictionaryAttr> argAttrs, resultAttrs;
    for (BlockArgument arg : body.getArguments()) {
      bool used = llvm::any_of(arg.getUsers(), [&](Operation *user) {
        return user != ret.getOperation() && inStage(user);
      });
      if (isCacheArgument(arg) && !used)
        continue;
      argTypes.push_back(arg.getType());
      argOrigin.push_back(arg.getArgNumber());
      argAttrs.push_back(fn.getArgAttrDict(arg.getArgNumber()));
    }
    SmallVector<Value> received = k ? crossing(cuts[k]) : SmallVector<Value>();
    for (Value v : received) {
      argTypes.push_back(v.getType());
      argOrigin.push_back(-1);
      argAttrs.push_back(DictionaryAttr::get(ctx));
    }
    SmallVector<Value> results;
    for (auto [i, v] : llvm::enumerate(ret.getOperands()))
      if (resultStage[i] == k) {
        results.push_back(v);
        resultOrigin.push_back(static_cast<int64_t>(i));
        resultAttrs.push_back(fn.getResultAttrDict(i));
      }
    if (k + 1 < stages)
      for (Value v : crossing(cuts[k + 1])) {
        results.push_back(v);
        resultOrigin.push_back(-1);
        resultAttrs.push_back(DictionaryAttr::get(ctx));
      }
    for (Value v : results)
      resultTypes.push_back(v.getType());

    b.setInsertionPointAfter(after);
    auto stage = func::FuncOp::create(
        b, fn.getLoc(), (fn.getSymName() + ".stage" + Twine(k)).str(),
        FunctionType::get(ctx, argTypes, resultTypes));
    stage.setVisibility(fn.getVisibility());
    for (auto [i, d] : llvm::enumerate(argAttrs))
      if (d && !d.empty())
        stage.setArgAttrs(i, d);
    for (auto [i, d] : llvm::enumerate(resultAttrs))
      if (d && !d.empty())
        stage.setResultAttrs(i, d);
    after = stage;
    Block *entry = stage.addEntryBlock();
    IRMapping map;
    unsigned next = 0;
    for (int64_t origin : argOrigin)
      if (origin >= 0)
        map.map(body.getArgument(origin), entry->getArgument(next++));
    for (Value v : received)
      map.map(v, entry->getArgument(next++));
    b.setInsertionPointToStart(entry);
    for (Operation *op : ops)
      if (inStage(op) || needed.contains(op))
        b.clone(*op, map);
    SmallVector<Value> mapped;
    for (Value v : results)
      mapped.push_back(map.lookup(v));
    func::ReturnOp::create(b, ret.getLoc(), mapped);
    staged.stages.push_back(stage);
    staged.argOrigin.push_back(std::move(argOrigin));
    staged.resultOrigin.push_back(std::move(resultOrigin));
  }
  fn.erase();
  return staged;
}

LogicalResult ds::connectStages(StagedFunction &staged, FlatSymbolRefAttr grid,
                                int16_t axis) {
  const int64_t stages = static_cast<int64_t>(staged.stages.size());
  MLIRContext *ctx = grid.getContext();
  OpBuilder b(ctx);
  auto axes = DenseI16ArrayAttr::get(ctx, {axis});
  for (int64_t k = 0; k < stages; ++k) {
    func::FuncOp stage = staged.stages[k];
    Block &body = stage.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    const auto &argOrigin = staged.argOrigin[k];
    const auto &resultOrigin = staged.resultOrigin[k];

    // What crosses into the next stage is sent at the end.
    b.setInsertionPoint(ret);
    llvm::BitVector sent(resultOrigin.size());
    SmallVector<Value> kept;
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      if (resultOrigin[i] >= 0) {
        kept.push_back(v);
        continue;
      }
      sent.set(i);
      shard::SendOp::create(b, ret.getLoc(), v.getType(), grid, axes, v,
                            DenseI64ArrayAttr::get(ctx, {k + 1}), ValueRange());
    }
    ret->setOperands(kept);
    if (failed(stage.eraseResults(sent)))
      return stage.emitError("could not drop the values sent on");

    // What crosses in is received at the start, shaped as the tokens'
    // leading dims (batch, and sequence where it is dynamic).
    BlockArgument tokens;
    for (auto [i, origin] : llvm::enumerate(argOrigin))
      if (origin >= 0 && tokens == BlockArgument() &&
          isa<IntegerType>(getElementTypeOrSelf(body.getArgument(i))))
        tokens = body.getArgument(i);
    b.setInsertionPointToStart(&body);
    llvm::BitVector recv(argOrigin.size());
    for (auto [i, origin] : llvm::enumerate(argOrigin)) {
      if (origin >= 0)
        continue;
      recv.set(i);
      BlockArgument arg = body.getArgument(i);
      auto type = cast<RankedTensorType>(arg.getType());
      SmallVector<Value> sizes;
      for (int64_t d = 0; d < type.getRank(); ++d) {
        if (!type.isDynamicDim(d))
          continue;
        auto tokensType =
            tokens ? cast<RankedTensorType>(tokens.getType()) : nullptr;
        if (!tokensType || d >= tokensType.getRank() ||
            !tokensType.isDynamicDim(d))
          return stage.emitError()
                 << "ds-partition: the activations crossing into stage " << k
                 << " (" << type
                 << ") have a dynamic dim the token ids' shape does not give";
        sizes.push_back(tensor::DimOp::create(b, stage.getLoc(), tokens, d));
      }
      Value empty = tensor::EmptyOp::create(b, stage.getLoc(), type, sizes);
      Value in = shard::RecvOp::create(
          b, stage.getLoc(), type, grid, axes, empty,
          DenseI64ArrayAttr::get(ctx, {k - 1}), ValueRange());
      arg.replaceAllUsesWith(in);
    }
    if (failed(stage.eraseArguments(recv)))
      return stage.emitError("could not drop the received arguments");

    unsigned a = 0;
    for (int64_t origin : argOrigin)
      if (origin >= 0)
        stage.setArgAttr(a++, kPipelineArgAttrName,
                         b.getI64IntegerAttr(origin));
    unsigned r = 0;
    for (int64_t origin : resultOrigin)
      if (origin >= 0)
        stage.setResultAttr(r++, kPipelineResultAttrName,
                            b.getI64IntegerAttr(origin));
  }

  // The whole function: a declaration listing its stages.
  b.setInsertionPoint(staged.stages.front());
  auto decl =
      func::FuncOp::create(b, Location(staged.loc), staged.name, staged.type);
  decl.setPrivate();
  if (staged.argAttrs)
    decl.setAllArgAttrs(staged.argAttrs);
  if (staged.resultAttrs)
    decl.setAllResultAttrs(staged.resultAttrs);
  SmallVector<Attribute> refs;
  for (func::FuncOp stage : staged.stages)
    refs.push_back(FlatSymbolRefAttr::get(stage.getSymNameAttr()));
  decl->setAttr(kPipelineStagesAttrName, ArrayAttr::get(ctx, refs));
  decl->setAttr(kPipelineAxisAttrName, b.getI64IntegerAttr(axis));
  return success();
}
