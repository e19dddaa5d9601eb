//===- FuseMoE.cpp - the routed MoE chain into one kernel -----------------===//
//
// Matches dispatch -> grouped gate/up -> GLU -> grouped down -> combine from
// the combine upwards and replaces it with ds.fused_moe.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "ds-fuse-moe"

namespace ds {
#define GEN_PASS_DEF_FUSEMOEPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

bool onlyUsedBy(Value v, Operation *user) {
  return llvm::all_of(v.getUsers(), [&](Operation *u) { return u == user; });
}

struct FuseMoE : OpRewritePattern<MoECombineOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(MoECombineOp combine,
                                PatternRewriter &rewriter) const override {
    auto down = combine.getExpertOut().getDefiningOp<GroupedMatmulOp>();
    if (!down || !down->hasOneUse())
      return rewriter.notifyMatchFailure(combine, "no grouped down matmul");
    auto glu = down.getInput().getDefiningOp<SwiGLUOp>();
    if (!glu || !glu->hasOneUse())
      return rewriter.notifyMatchFailure(combine, "no GLU");
    auto dispatch = down.getOffsets().getDefiningOp<MoEDispatchOp>();
    if (!dispatch || combine.getRows() != dispatch.getRows() ||
        down.getOffsets() != dispatch.getOffsets())
      return rewriter.notifyMatchFailure(combine, "no matching dispatch");

    // Gate and up: one merged grouped matmul split in halves, or two.
    Value gateUp;
    SmallVector<Operation *> chain;
    if (auto split = glu.getGate().getDefiningOp<SplitOp>()) {
      auto merged = split.getInput().getDefiningOp<GroupedMatmulOp>();
      if (split.getNumResults() != 2 || glu.getGate() != split.getResult(0) ||
          glu.getUp() != split.getResult(1) || !merged ||
          !merged->hasOneUse() || !onlyUsedBy(split.getResult(0), glu) ||
          !onlyUsedBy(split.getResult(1), glu) ||
          merged.getInput() != dispatch.getSorted() ||
          merged.getOffsets() != dispatch.getOffsets() ||
          split.getAxis() != 1 || split.getSizes()[0] != split.getSizes()[1])
        return rewriter.notifyMatchFailure(combine, "gate/up do not match");
      gateUp = merged.getWeight();
      chain = {split, merged};
    } else {
      auto gate = glu.getGate().getDefiningOp<GroupedMatmulOp>();
      auto up = glu.getUp().getDefiningOp<GroupedMatmulOp>();
      if (!gate || !up || gate == up || !gate->hasOneUse() ||
          !up->hasOneUse() || gate.getInput() != dispatch.getSorted() ||
          up.getInput() != dispatch.getSorted() ||
          gate.getOffsets() != dispatch.getOffsets() ||
          up.getOffsets() != dispatch.getOffsets())
        return rewriter.notifyMatchFailure(combine, "gate/up do not match");
      if (gate.getWeight().getType() != up.getWeight().getType())
        return rewriter.notifyMatchFailure(combine, "gate/up weights differ");
      // Quantized or sparse weights (an FP8 checkpoint) are joined by
      // ds.concat_weights when their blocks allow it.
      if (!isa<RankedTensorType>(gate.getWeight().getType()) &&
          !canConcatWeights({gate.getWeight(), up.getWeight()}, 1))
        return rewriter.notifyMatchFailure(
            combine, "quantized gate/up weights cannot be joined");
      chain = {gate, up};
    }
    // The dispatch's results may feed nothing but this chain.
    for (Value v : dispatch.getResults())
      for (Operation *user : v.getUsers())
        if (user != combine && user != down && !llvm::is_contained(chain, user))
          return rewriter.notifyMatchFailure(combine, "dispatch is shared");
    // Only now, with every check passed, change the IR.
    if (!gateUp) {
      auto gate = cast<GroupedMatmulOp>(chain[0]);
      auto up = cast<GroupedMatmulOp>(chain[1]);
      SmallVector<Value, 2> halves = {gate.getWeight(), up.getWeight()};
      gateUp = isa<RankedTensorType>(gate.getWeight().getType())
                   ? Value(tensor::ConcatOp::create(rewriter, combine.getLoc(),
                                                    1, halves))
                   : Value(ConcatWeightsOp::create(rewriter, combine.getLoc(),
                                                   halves, 1));
    }

    auto fused = FusedMoEOp::create(
        rewriter, combine.getLoc(), dispatch.getInput(), combine.getWeights(),
        dispatch.getIndices(), gateUp, down.getWeight(),
        glu.getActivationAttr(), ActQuantAttr(), ActQuantAttr(),
        FlatSymbolRefAttr(), DenseI16ArrayAttr(), UnitAttr());
    Value result = fused.getResult();
    if (result.getType() != combine.getType())
      result = tensor::CastOp::create(rewriter, combine.getLoc(),
                                      combine.getType(), result);
    rewriter.replaceOp(combine, result);
    rewriter.eraseOp(down);
    rewriter.eraseOp(glu);
    for (Operation *op : chain)
      rewriter.eraseOp(op);
    rewriter.eraseOp(dispatch);
    return success();
  }
};

struct FuseMoEPass : public ds::impl::FuseMoEPassBase<FuseMoEPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseMoEPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace

void ds::populateFuseMoEPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseMoE>(patterns.getContext());
}
