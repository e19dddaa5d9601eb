//===- FuseRouter.cpp - gate projection + router into one kernel ----------===//
//
// ds.router(ds.linear(x, w)) with a bias-free, single-use linear becomes
// ds.fused_router(x, w).
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "ds-fuse-router"

namespace ds {
#define GEN_PASS_DEF_FUSEROUTERPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {
struct FuseRouter : OpRewritePattern<RouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(RouterOp op,
                                PatternRewriter &rewriter) const override {
    auto linear = op.getLogits().getDefiningOp<LinearOp>();
    if (!linear || linear.getBias() || !linear->hasOneUse())
      return rewriter.notifyMatchFailure(op, "logits are not a plain linear");
    auto input = dyn_cast<RankedTensorType>(linear.getInput().getType());
    if (!input)
      return rewriter.notifyMatchFailure(op, "router input is quantized");
    if (input.getRank() != 2)
      return rewriter.notifyMatchFailure(op, "router input is not [N, H]");
    // ds.fused_router keeps its logits in f32; fusing a linear that rounds
    // them to a narrower type would change which experts win near-ties.
    if (!cast<RankedTensorType>(linear.getType()).getElementType().isF32())
      return rewriter.notifyMatchFailure(op, "logits are not f32");
    auto fused = FusedRouterOp::create(
        rewriter, op.getLoc(), op.getWeights().getType(),
        op.getIndices().getType(), linear.getInput(), linear.getWeight(),
        op.getBias(), op.getRouting());
    rewriter.replaceOp(op, fused.getResults());
    rewriter.eraseOp(linear);
    return success();
  }
};

struct FuseRouterPass : public ds::impl::FuseRouterPassBase<FuseRouterPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseRouterPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace

void ds::populateFuseRouterPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseRouter>(patterns.getContext());
}
