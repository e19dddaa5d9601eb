//===- DecomposeMoE.cpp - ds.moe into explicit MoE steps ------------------===//
//
// Rewrites the high-level ds.moe into ds.linear (gate projection), ds.router,
// ds.moe_dispatch, ds.grouped_matmul (gate, up), ds.swiglu,
// ds.grouped_matmul (down) and ds.moe_combine, plus the shared expert. Inputs
// of rank other than 2 are flattened to [tokens, hidden] and restored after.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#define DEBUG_TYPE "ds-decompose-moe"

namespace ds {
#define GEN_PASS_DEF_DECOMPOSEMOEPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// The reassociation that collapses all leading dims of a rank-`rank` tensor
/// into one: [[0, ..., rank-2], [rank-1]].
static SmallVector<ReassociationIndices> flattenReassociation(int64_t rank) {
  ReassociationIndices leading;
  for (int64_t i = 0; i + 1 < rank; ++i)
    leading.push_back(i);
  return {leading, {rank - 1}};
}

struct DecomposeMoE : OpRewritePattern<MoEOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(MoEOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value input = op.getInput();
    auto inputType = cast<RankedTensorType>(input.getType());
    int64_t rank = inputType.getRank();

    // Flatten to [N, H]. Rank 1 (a single token) gains a unit token axis.
    Value flat = input;
    if (rank == 1) {
      flat = tensor::ExpandShapeOp::create(
          rewriter, loc,
          RankedTensorType::get({1, inputType.getDimSize(0)},
                                inputType.getElementType()),
          input, SmallVector<ReassociationIndices>{{0, 1}});
    } else if (rank > 2) {
      flat = tensor::CollapseShapeOp::create(rewriter, loc, input,
                                             flattenReassociation(rank));
    }

    RoutingAttr routing = op.getRouting();
    Value logits = LinearOp::create(rewriter, loc, flat, op.getRouterWeight(),
                                    /*bias=*/Value());
    auto router =
        RouterOp::create(rewriter, loc, logits, op.getScoreBias(), routing);
    Value result;
    if (op.getExpertGridAttr()) {
      // A process's block of the experts (expert parallelism): the unfused
      // dispatch and grouped matmuls number the experts of one process, so
      // the routed part becomes the fused kernel, which takes the block.
      SmallVector<Value, 2> halves = {op.getExpertGate(), op.getExpertUp()};
      Value gateUp =
          isa<RankedTensorType>(op.getExpertGate().getType())
              ? Value(tensor::ConcatOp::create(rewriter, loc, 1, halves))
              : Value(ConcatWeightsOp::create(rewriter, loc, halves, 1));
      result = FusedMoEOp::create(
          rewriter, loc, flat, router.getWeights(), router.getIndices(), gateUp,
          op.getExpertDown(), op.getActivationAttr(), ActQuantAttr(),
          ActQuantAttr(), op.getExpertGridAttr(), op.getExpertGridAxesAttr(),
          op.getAllToAllAttr());
    } else {
      auto dispatch = MoEDispatchOp::create(
          rewriter, loc, flat, router.getIndices(), routing.getNumSlots());
      Value gate =
          GroupedMatmulOp::create(rewriter, loc, dispatch.getSorted(),
                                  op.getExpertGate(), dispatch.getOffsets());
      Value up =
          GroupedMatmulOp::create(rewriter, loc, dispatch.getSorted(),
                                  op.getExpertUp(), dispatch.getOffsets());
      Value hidden =
          SwiGLUOp::create(rewriter, loc, gate, up, op.getActivationAttr());
      Value down = GroupedMatmulOp::create(
          rewriter, loc, hidden, op.getExpertDown(), dispatch.getOffsets());
      result = MoECombineOp::create(rewriter, loc, down, router.getWeights(),
                                    dispatch.getRows());
    }

    if (op.getSharedGate()) {
      Value sGate =
          LinearOp::create(rewriter, loc, flat, op.getSharedGate(), Value());
      Value sUp =
          LinearOp::create(rewriter, loc, flat, op.getSharedUp(), Value());
      Value sHidden =
          SwiGLUOp::create(rewriter, loc, sGate, sUp, op.getActivationAttr());
      Value shared =
          LinearOp::create(rewriter, loc, sHidden, op.getSharedDown(), Value());
      if (Value gateWeight = op.getSharedExpertGate()) {
        Value gateLogit =
            LinearOp::create(rewriter, loc, flat, gateWeight, Value());
        Value gateValue =
            ActivationOp::create(rewriter, loc, Activation::sigmoid, gateLogit);
        shared = MulOp::create(rewriter, loc, shared, gateValue);
      }
      // The routed and shared outputs may differ in static-ness only.
      if (shared.getType() != result.getType())
        shared =
            tensor::CastOp::create(rewriter, loc, result.getType(), shared);
      result = arith::AddFOp::create(rewriter, loc, result, shared);
    }

    // Restore the input's shape.
    if (rank == 1) {
      result = tensor::CollapseShapeOp::create(
          rewriter, loc, result, SmallVector<ReassociationIndices>{{0, 1}});
    } else if (rank > 2) {
      SmallVector<OpFoldResult> outputShape;
      for (int64_t i = 0; i < rank; ++i) {
        if (inputType.isDynamicDim(i))
          outputShape.push_back(
              tensor::DimOp::create(rewriter, loc, input, i).getResult());
        else
          outputShape.push_back(rewriter.getIndexAttr(inputType.getDimSize(i)));
      }
      result = tensor::ExpandShapeOp::create(rewriter, loc, inputType, result,
                                             flattenReassociation(rank),
                                             outputShape);
    }
    if (result.getType() != op.getType())
      result = tensor::CastOp::create(rewriter, loc, op.getType(), result);
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct DecomposeMoEPass
    : public ds::impl::DecomposeMoEPassBase<DecomposeMoEPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateDecomposeMoEPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void ds::populateDecomposeMoEPatterns(RewritePatternSet &patterns) {
  patterns.add<DecomposeMoE>(patterns.getContext());
}
