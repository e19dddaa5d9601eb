//===- FuseElementwise.cpp - elementwise chains into one kernel
//------------===//
//
// A consumer elementwise op and an elementwise producer that only it uses
// become one ds.fused_elementwise whose body computes both per element;
// applied greedily, chains and trees of any length end up in one op.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include <cmath>

namespace ds {
#define GEN_PASS_DEF_FUSEELEMENTWISEPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

Value constant(OpBuilder &b, Location loc, Type type, double v) {
  return arith::ConstantOp::create(b, loc, type, b.getFloatAttr(type, v));
}

/// `kind(x)` for an f32 scalar, with the interpreter's formulas.
Value activation(OpBuilder &b, Location loc, Activation kind, Value x) {
  Type f32 = x.getType();
  auto one = [&] { return constant(b, loc, f32, 1.0); };
  auto sigmoidDenominator = [&] { // 1 + exp(-x)
    Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
    return arith::AddFOp::create(b, loc, one(), e);
  };
  switch (kind) {
  case Activation::silu:
    return arith::DivFOp::create(b, loc, x, sigmoidDenominator());
  case Activation::sigmoid:
    return arith::DivFOp::create(b, loc, one(), sigmoidDenominator());
  case Activation::relu:
    return arith::MaximumFOp::create(b, loc, x, constant(b, loc, f32, 0.0));
  case Activation::gelu: {
    Value t = arith::DivFOp::create(b, loc, x,
                                    constant(b, loc, f32, std::sqrt(2.0f)));
    Value e =
        arith::AddFOp::create(b, loc, one(), math::ErfOp::create(b, loc, t));
    Value h = arith::MulFOp::create(b, loc, constant(b, loc, f32, 0.5), x);
    return arith::MulFOp::create(b, loc, h, e);
  }
  case Activation::gelu_tanh: {
    // 0.5 x (1 + tanh(c (x + 0.044715 x x x)))
    Value cube =
        arith::MulFOp::create(b, loc, constant(b, loc, f32, 0.044715), x);
    cube = arith::MulFOp::create(b, loc, cube, x);
    cube = arith::MulFOp::create(b, loc, cube, x);
    Value inner = arith::AddFOp::create(b, loc, x, cube);
    float c = std::sqrt(2.0f / static_cast<float>(M_PI));
    inner = arith::MulFOp::create(b, loc, constant(b, loc, f32, c), inner);
    Value e = arith::AddFOp::create(b, loc, one(),
                                    math::TanhOp::create(b, loc, inner));
    Value h = arith::MulFOp::create(b, loc, constant(b, loc, f32, 0.5), x);
    return arith::MulFOp::create(b, loc, h, e);
  }
  }
  return x;
}

Value widen(OpBuilder &b, Location loc, Value v) {
  Type f32 = b.getF32Type();
  return v.getType() == f32 ? v : arith::ExtFOp::create(b, loc, f32, v);
}
Value narrowTo(OpBuilder &b, Location loc, Value v, Type type) {
  return v.getType() == type ? v : arith::TruncFOp::create(b, loc, type, v);
}

/// Emits the scalar computation of an elementwise op on scalar inputs.
using Emitter =
    std::function<Value(OpBuilder &, Location, ArrayRef<Value> inputs)>;

/// The elementwise ops that fuse, and how each computes an element.
std::optional<Emitter> describe(Operation *op) {
  if (!op || op->getNumResults() != 1 ||
      !isa<RankedTensorType>(op->getResult(0).getType()))
    return std::nullopt;
  // f32, bf16, f16: activations widen to f32 and narrow back.
  Type elt = getElementTypeOrSelf(op->getResult(0).getType());
  if (!elt.isF32() && !elt.isBF16() && !elt.isF16())
    return std::nullopt;
  for (Value v : op->getOperands()) {
    Type in = getElementTypeOrSelf(v.getType());
    if (!in.isF32() && !in.isBF16() && !in.isF16())
      return std::nullopt;
  }
  if (auto f = dyn_cast<FusedElementwiseOp>(op))
    return Emitter([f](OpBuilder &b, Location, ArrayRef<Value> in) mutable {
      IRMapping map;
      Block &body = f.getBody().front();
      map.map(body.getArguments(), in);
      for (Operation &o : body.without_terminator())
        b.clone(o, map);
      return map.lookup(cast<YieldOp>(body.back()).getValue());
    });
  if (isa<arith::AddFOp, arith::SubFOp, arith::MulFOp, arith::DivFOp,
          arith::MaximumFOp, arith::MinimumFOp, arith::NegFOp>(op))
    return Emitter(
        [op](OpBuilder &b, Location loc, ArrayRef<Value> in) -> Value {
          OperationState state(loc, op->getName());
          state.addOperands(in);
          state.addTypes(in[0].getType());
          state.addAttributes(op->getAttrs());
          return b.create(state)->getResult(0);
        });
  if (isa<arith::ExtFOp, arith::TruncFOp>(op))
    return Emitter(
        [op, elt](OpBuilder &b, Location loc, ArrayRef<Value> in) -> Value {
          if (isa<arith::ExtFOp>(op))
            return arith::ExtFOp::create(b, loc, elt, in[0]);
          return arith::TruncFOp::create(b, loc, elt, in[0]);
        });
  if (auto a = dyn_cast<ActivationOp>(op)) {
    Activation kind = a.getKind();
    return Emitter(
        [kind, elt](OpBuilder &b, Location loc, ArrayRef<Value> in) -> Value {
          return narrowTo(b, loc,
                          activation(b, loc, kind, widen(b, loc, in[0])), elt);
        });
  }
  if (isa<MulOp>(op))
    return Emitter([](OpBuilder &b, Location loc, ArrayRef<Value> in) -> Value {
      return arith::MulFOp::create(b, loc, in[0], in[1]);
    });
  if (auto s = dyn_cast<SwiGLUOp>(op)) {
    Activation kind = s.getActivation();
    return Emitter(
        [kind, elt](OpBuilder &b, Location loc, ArrayRef<Value> in) -> Value {
          Value g = activation(b, loc, kind, widen(b, loc, in[0]));
          Value y = arith::MulFOp::create(b, loc, g, widen(b, loc, in[1]));
          return narrowTo(b, loc, y, elt);
        });
  }
  return std::nullopt;
}

/// A ds.fused_elementwise over `inputs` and its body block (one scalar
/// argument per input), with the rewriter's insertion point in the block.
std::pair<FusedElementwiseOp, Block *> createFused(PatternRewriter &rewriter,
                                                   Location loc,
                                                   Type resultType,
                                                   ArrayRef<Value> inputs) {
  auto fused = FusedElementwiseOp::create(rewriter, loc, resultType, inputs);
  SmallVector<Type> argTypes;
  for (Value v : inputs)
    argTypes.push_back(getElementTypeOrSelf(v.getType()));
  SmallVector<Location> argLocs(inputs.size(), loc);
  Block *block = rewriter.createBlock(&fused.getBody(), {}, argTypes, argLocs);
  return {fused, block};
}

/// consumer(..., producer(...), ...) with the producer used only there
/// ==>  one ds.fused_elementwise.
struct FuseElementwiseChain : RewritePattern {
  FuseElementwiseChain(MLIRContext *ctx)
      : RewritePattern(MatchAnyOpTypeTag(), 1, ctx) {}

  LogicalResult matchAndRewrite(Operation *consumer,
                                PatternRewriter &rewriter) const override {
    std::optional<Emitter> emitC = describe(consumer);
    if (!emitC)
      return failure();
    auto resultType = cast<RankedTensorType>(consumer->getResult(0).getType());
    for (Value operand : consumer->getOperands()) {
      Operation *producer = operand.getDefiningOp();
      std::optional<Emitter> emitP = describe(producer);
      // A producer of a broadcast operand (e.g. a [N, 1] gate) fuses too:
      // its inputs broadcast like its result, and it is recomputed per
      // element, which costs less than a kernel of its own.
      if (!emitP || producer == consumer ||
          !llvm::all_of(producer->getUsers(),
                        [&](Operation *u) { return u == consumer; }))
        continue;
      // Inputs: the consumer's (but the producer's result), then the
      // producer's, each once.
      SmallVector<Value> inputs;
      auto add = [&](Value v) {
        if (v != operand && !llvm::is_contained(inputs, v))
          inputs.push_back(v);
      };
      llvm::for_each(consumer->getOperands(), add);
      llvm::for_each(producer->getOperands(), add);
      Location loc = consumer->getLoc();
      auto [fused, block] = createFused(rewriter, loc, resultType, inputs);
      Block *body = block;
      auto scalar = [&](Value v) {
        return body->getArgument(llvm::find(inputs, v) - inputs.begin());
      };
      SmallVector<Value> pIn, cIn;
      for (Value v : producer->getOperands())
        pIn.push_back(scalar(v));
      Value p = (*emitP)(rewriter, producer->getLoc(), pIn);
      for (Value v : consumer->getOperands())
        cIn.push_back(v == operand ? p : scalar(v));
      Value c = (*emitC)(rewriter, loc, cIn);
      YieldOp::create(rewriter, loc, c);
      rewriter.replaceOp(consumer, fused.getResult());
      rewriter.eraseOp(producer);
      return success();
    }
    return failure();
  }
};

/// A lone elementwise op ==> a ds.fused_elementwise of one op, so that
/// code generation has one elementwise form to lower.
struct WrapElementwise : RewritePattern {
  WrapElementwise(MLIRContext *ctx)
      : RewritePattern(MatchAnyOpTypeTag(), 1, ctx) {}

  LogicalResult matchAndRewrite(Operation *op,
                                PatternRewriter &rewriter) const override {
    if (isa<FusedElementwiseOp>(op))
      return failure();
    std::optional<Emitter> emit = describe(op);
    if (!emit || op->getNumResults() != 1 ||
        !isa<RankedTensorType>(op->getResult(0).getType()))
      return failure();
    SmallVector<Value> inputs;
    for (Value v : op->getOperands())
      if (!llvm::is_contained(inputs, v))
        inputs.push_back(v);
    Location loc = op->getLoc();
    auto [fused, block] =
        createFused(rewriter, loc, op->getResult(0).getType(), inputs);
    SmallVector<Value> in;
    for (Value v : op->getOperands())
      in.push_back(block->getArgument(llvm::find(inputs, v) - inputs.begin()));
    YieldOp::create(rewriter, loc, (*emit)(rewriter, loc, in));
    rewriter.replaceOp(op, fused.getResult());
    return success();
  }
};

struct FuseElementwisePass
    : public ds::impl::FuseElementwisePassBase<FuseElementwisePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseElementwisePatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace

void ds::populateFuseElementwisePatterns(RewritePatternSet &patterns) {
  patterns.add<FuseElementwiseChain>(patterns.getContext());
}

void ds::populateWrapElementwisePatterns(RewritePatternSet &patterns) {
  patterns.add<WrapElementwise>(patterns.getContext());
}
