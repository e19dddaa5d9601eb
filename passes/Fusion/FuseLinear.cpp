//===- FuseLinear.cpp - prologues and epilogues into ds.fused_linear ------===//
//
// Four patterns grow a ds.fused_linear around a ds.linear or an existing
// ds.fused_linear: an RMSNorm prologue, and GLU, activation and residual
// epilogues. Each absorbs one neighbour whose value has no other user, so
// repeated application builds the whole kernel.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "ds-fuse-linear"

namespace ds {
#define GEN_PASS_DEF_FUSELINEARPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// The pieces of a (fused) linear, editable before rebuilding it.
struct LinearParts {
  Value input, weight, normWeight, bias, residual;
  FloatAttr normEpsilon;
  ActivationAttr activation;
  bool gated = false;
  ActQuantAttr inputQuant;

  /// A ds.linear whose input a ds.quantize makes becomes a fused linear that
  /// quantizes its own (float) input.
  static std::optional<LinearParts> of(Operation *op) {
    if (auto l = dyn_cast_or_null<LinearOp>(op)) {
      LinearParts parts{l.getInput(), l.getWeight(), {}, l.getBias(), {}, {},
                        {},           false,         {}};
      if (isa<QTensorType>(parts.input.getType())) {
        auto quant = parts.input.getDefiningOp<QuantizeOp>();
        if (!quant)
          return std::nullopt;
        parts.input = quant.getInput();
        parts.inputQuant = quant.getScheme();
      }
      return parts;
    }
    if (auto f = dyn_cast_or_null<FusedLinearOp>(op))
      return LinearParts{
          f.getInput(),          f.getWeight(),   f.getNormWeight(),
          f.getBias(),           f.getResidual(), f.getNormEpsilonAttr(),
          f.getActivationAttr(), f.getGated(),    f.getInputQuantAttr()};
    return std::nullopt;
  }
  bool hasEpilogue() const { return activation || gated || residual; }

  Value build(PatternRewriter &rewriter, Location loc, Type resultType) const {
    auto op = FusedLinearOp::create(rewriter, loc, resultType, input, weight,
                                    normWeight, bias, residual, normEpsilon,
                                    activation, gated, inputQuant);
    return op.getResult();
  }
};

/// rms_norm(x) -> linear  ==>  fused_linear(x, norm)
struct FuseNormPrologue : RewritePattern {
  FuseNormPrologue(MLIRContext *ctx)
      : RewritePattern(MatchAnyOpTypeTag(), 1, ctx) {}
  LogicalResult matchAndRewrite(Operation *op,
                                PatternRewriter &rewriter) const override {
    std::optional<LinearParts> parts = LinearParts::of(op);
    if (!parts || parts->normWeight)
      return failure();
    auto norm = parts->input.getDefiningOp<RMSNormOp>();
    if (!norm || !norm->hasOneUse())
      return failure();
    parts->input = norm.getInput();
    parts->normWeight = norm.getWeight();
    parts->normEpsilon = norm.getEpsilonAttr();
    rewriter.replaceOp(
        op, parts->build(rewriter, op->getLoc(), op->getResult(0).getType()));
    rewriter.eraseOp(norm);
    return success();
  }
};

/// linear(quantize(x))  ==>  fused_linear(x) {input_quant}: the GEMM
/// quantizes its input itself (and a norm prologue can then join it).
struct FuseInputQuantization : OpRewritePattern<LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LinearOp op,
                                PatternRewriter &rewriter) const override {
    auto quant = op.getInput().getDefiningOp<QuantizeOp>();
    std::optional<LinearParts> parts = LinearParts::of(op);
    if (!quant || !parts)
      return failure();
    rewriter.replaceOp(op, parts->build(rewriter, op.getLoc(), op.getType()));
    if (quant->use_empty())
      rewriter.eraseOp(quant);
    return success();
  }
};

/// swiglu(split(linear)#0, split(linear)#1)  ==>  fused_linear {gated}
struct FuseGatedEpilogue : OpRewritePattern<SwiGLUOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SwiGLUOp glu,
                                PatternRewriter &rewriter) const override {
    auto split = glu.getGate().getDefiningOp<SplitOp>();
    if (!split || split.getNumResults() != 2 ||
        glu.getUp() != split.getResult(1) ||
        glu.getGate() != split.getResult(0) ||
        split.getSizes()[0] != split.getSizes()[1])
      return failure();
    auto input = dyn_cast<RankedTensorType>(split.getInput().getType());
    if (!input || static_cast<int64_t>(split.getAxis()) != input.getRank() - 1)
      return failure();
    for (Value v : split.getResults())
      if (!llvm::all_of(v.getUsers(), [&](Operation *u) { return u == glu; }))
        return failure();
    Operation *producer = split.getInput().getDefiningOp();
    std::optional<LinearParts> parts = LinearParts::of(producer);
    if (!parts || parts->hasEpilogue() || !producer->hasOneUse())
      return failure();
    parts->gated = true;
    parts->activation = glu.getActivationAttr();
    rewriter.replaceOp(glu,
                       parts->build(rewriter, glu.getLoc(), glu.getType()));
    rewriter.eraseOp(split);
    rewriter.eraseOp(producer);
    return success();
  }
};

/// activation(linear)  ==>  fused_linear {activation}
struct FuseActivationEpilogue : OpRewritePattern<ActivationOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ActivationOp act,
                                PatternRewriter &rewriter) const override {
    Operation *producer = act.getInput().getDefiningOp();
    std::optional<LinearParts> parts = LinearParts::of(producer);
    if (!parts || parts->hasEpilogue() || !producer->hasOneUse())
      return failure();
    parts->activation = act.getKindAttr();
    rewriter.replaceOp(act,
                       parts->build(rewriter, act.getLoc(), act.getType()));
    rewriter.eraseOp(producer);
    return success();
  }
};

/// addf(r, linear) or addf(linear, r)  ==>  fused_linear {residual = r}
struct FuseResidualEpilogue : OpRewritePattern<arith::AddFOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(arith::AddFOp add,
                                PatternRewriter &rewriter) const override {
    for (auto [mine, other] : {std::pair(add.getRhs(), add.getLhs()),
                               std::pair(add.getLhs(), add.getRhs())}) {
      Operation *producer = mine.getDefiningOp();
      std::optional<LinearParts> parts = LinearParts::of(producer);
      if (!parts || parts->residual || !producer->hasOneUse() ||
          other.getType() != add.getType() || mine.getType() != add.getType())
        continue;
      parts->residual = other;
      rewriter.replaceOp(add,
                         parts->build(rewriter, add.getLoc(), add.getType()));
      rewriter.eraseOp(producer);
      return success();
    }
    return failure();
  }
};

struct FuseLinearPass : public ds::impl::FuseLinearPassBase<FuseLinearPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseLinearPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace

void ds::populateFuseLinearPatterns(RewritePatternSet &patterns) {
  patterns.add<FuseNormPrologue, FuseInputQuantization>(patterns.getContext());
  patterns.add<FuseGatedEpilogue, FuseActivationEpilogue, FuseResidualEpilogue>(
      patterns.getContext());
}
