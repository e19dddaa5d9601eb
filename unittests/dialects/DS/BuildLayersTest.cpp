//===- BuildLayersTest.cpp - build MoE layers with the ds C++ API ---------===//
//
// Builds one DeepSeek-V3 decoder layer (MLA + MoE with shared expert and
// grouped sigmoid routing), one Mixtral layer (GQA + softmax top-2) and one
// Qwen2-MoE layer (q/k/v biases + gated shared expert) through the generated
// builders, relying on result type inference, then checks the inferred types,
// verification, printing/parsing and the MoE decomposition.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/InitAllDialects.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace ds;

namespace {

constexpr int64_t kDyn = ShapedType::kDynamic;

/// Sizes of a small layer; the same numbers appear in the lit examples.
struct LayerSizes {
  int64_t hidden = 64;
  int64_t heads = 4;
  int64_t kvHeads = 2;
  int64_t headDim = 16;
  int64_t experts = 8;
  int64_t topK = 2;
  int64_t moeInter = 32;
  int64_t sharedInter = 48;
};

class LayerBuilder {
public:
  LayerBuilder(MLIRContext &ctx, StringRef prefix)
      : b(&ctx), loc(b.getUnknownLoc()), prefix(prefix.str()) {
    f32 = b.getF32Type();
  }

  /// Creates `func.func @name(%x: [?, ?, H], %pos: [?, ?]) -> [?, ?, H]` in
  /// `module` and positions the builder in its body.
  void begin(ModuleOp module, StringRef name, int64_t hidden) {
    auto act = RankedTensorType::get({kDyn, kDyn, hidden}, f32);
    auto pos = RankedTensorType::get({kDyn, kDyn}, b.getI64Type());
    b.setInsertionPointToEnd(module.getBody());
    func = func::FuncOp::create(b, loc, name,
                                b.getFunctionType({act, pos}, {act}));
    b.setInsertionPointToStart(func.addEntryBlock());
    x = func.getArgument(0);
    positions = func.getArgument(1);
  }

  void end(Value result) { func::ReturnOp::create(b, loc, result); }

  Value param(StringRef name, ArrayRef<int64_t> shape) {
    return ParamOp::create(b, loc, RankedTensorType::get(shape, f32),
                           prefix + name.str());
  }
  Value linear(Value in, StringRef name, int64_t out, int64_t inDim,
               bool bias = false) {
    Value w = param((name + ".weight").str(), {out, inDim});
    Value bv = bias ? param((name + ".bias").str(), {out}) : Value();
    return LinearOp::create(b, loc, in, w, bv);
  }
  Value rmsNorm(Value in, StringRef name, int64_t dim, double eps) {
    return RMSNormOp::create(b, loc, in, param(name, {dim}),
                             b.getF64FloatAttr(eps));
  }
  Value add(Value l, Value r) { return arith::AddFOp::create(b, loc, l, r); }

  OpBuilder b;
  Location loc;
  std::string prefix;
  Type f32;
  func::FuncOp func;
  Value x, positions;
};

RopeAttr defaultRope(MLIRContext &ctx, int64_t dim, double theta,
                     RopeStyle style = RopeStyle::rotate_half) {
  return RopeAttr::get(
      &ctx, dim, llvm::APFloat(theta), style, RopeScaling::none,
      llvm::APFloat(1.0), 0, llvm::APFloat(32.0), llvm::APFloat(1.0),
      llvm::APFloat(0.0), llvm::APFloat(0.0), llvm::APFloat(0.0), true);
}

/// GQA self-attention with RoPE; returns the o_proj output.
Value buildGqaAttention(LayerBuilder &lb, const LayerSizes &s, Value h,
                        bool qkvBias, double theta) {
  MLIRContext &ctx = *lb.b.getContext();
  int64_t qDim = s.heads * s.headDim, kvDim = s.kvHeads * s.headDim;
  Value q = lb.linear(h, "self_attn.q_proj", qDim, s.hidden, qkvBias);
  Value k = lb.linear(h, "self_attn.k_proj", kvDim, s.hidden, qkvBias);
  Value v = lb.linear(h, "self_attn.v_proj", kvDim, s.hidden, qkvBias);
  q = SplitHeadsOp::create(lb.b, lb.loc, q, s.heads);
  k = SplitHeadsOp::create(lb.b, lb.loc, k, s.kvHeads);
  v = SplitHeadsOp::create(lb.b, lb.loc, v, s.kvHeads);
  RopeAttr rope = defaultRope(ctx, s.headDim, theta);
  q = RopeOp::create(lb.b, lb.loc, q, lb.positions, rope);
  k = RopeOp::create(lb.b, lb.loc, k, lb.positions, rope);
  Value o = AttentionOp::create(lb.b, lb.loc, q, k, v, lb.positions,
                                lb.b.getF64FloatAttr(1.0 / std::sqrt(16.0)),
                                IntegerAttr(), /*k_scale=*/FloatAttr(),
                                /*v_scale=*/FloatAttr());
  o = MergeHeadsOp::create(lb.b, lb.loc, o);
  return lb.linear(o, "self_attn.o_proj", s.hidden, qDim);
}

Value buildMoE(LayerBuilder &lb, const LayerSizes &s, Value h,
               RoutingAttr routing, bool withBias, bool shared, bool sharedGate,
               StringRef sharedName) {
  Value router = lb.param("mlp.gate.weight", {s.experts, s.hidden});
  Value bias = withBias
                   ? lb.param("mlp.gate.e_score_correction_bias", {s.experts})
                   : Value();
  Value g = lb.param("mlp.experts.*.gate_proj.weight",
                     {s.experts, s.moeInter, s.hidden});
  Value u = lb.param("mlp.experts.*.up_proj.weight",
                     {s.experts, s.moeInter, s.hidden});
  Value d = lb.param("mlp.experts.*.down_proj.weight",
                     {s.experts, s.hidden, s.moeInter});
  Value sg, su, sd, seg;
  if (shared) {
    std::string n = ("mlp." + sharedName).str();
    sg = lb.param(n + ".gate_proj.weight", {s.sharedInter, s.hidden});
    su = lb.param(n + ".up_proj.weight", {s.sharedInter, s.hidden});
    sd = lb.param(n + ".down_proj.weight", {s.hidden, s.sharedInter});
  }
  if (sharedGate)
    seg = lb.param("mlp.shared_expert_gate.weight", {1, s.hidden});
  return MoEOp::create(lb.b, lb.loc, h, router, bias, g, u, d, sg, su, sd, seg,
                       routing,
                       ActivationAttr::get(lb.b.getContext(), Activation::silu),
                       FlatSymbolRefAttr(), DenseI16ArrayAttr(), UnitAttr());
}

class BuildLayersTest : public ::testing::Test {
protected:
  BuildLayersTest() {
    DialectRegistry registry;
    registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
    module = ModuleOp::create(UnknownLoc::get(&ctx));
  }

  /// Verifies, prints, parses back and compares the printed forms.
  void expectRoundTrip() {
    ASSERT_TRUE(succeeded(verify(*module)));
    std::string printed;
    llvm::raw_string_ostream os(printed);
    module->print(os);
    OwningOpRef<ModuleOp> reparsed = parseSourceString<ModuleOp>(printed, &ctx);
    ASSERT_TRUE(reparsed);
    std::string again;
    llvm::raw_string_ostream os2(again);
    reparsed->print(os2);
    EXPECT_EQ(printed, again);
  }

  template <typename OpT> int count() {
    int n = 0;
    module->walk([&](OpT) { ++n; });
    return n;
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
  LayerSizes s;
};

TEST_F(BuildLayersTest, MixtralLayer) {
  LayerBuilder lb(ctx, "model.layers.0.");
  lb.begin(*module, "mixtral_layer", s.hidden);
  Value h = lb.rmsNorm(lb.x, "input_layernorm.weight", s.hidden, 1e-5);
  Value attn = buildGqaAttention(lb, s, h, /*qkvBias=*/false, 1e6);
  Value x = lb.add(lb.x, attn);
  h = lb.rmsNorm(x, "post_attention_layernorm.weight", s.hidden, 1e-5);
  auto routing = RoutingAttr::get(
      &ctx, s.experts, 2, ScoringFunc::softmax, 1, 1, GroupScore::max,
      /*normTopkProb=*/true, llvm::APFloat(0.0), llvm::APFloat(1.0),
      ArrayRef<int64_t>(), ArrayRef<int64_t>());
  Value moe = buildMoE(lb, s, h, routing, false, false, false, "");
  lb.end(lb.add(x, moe));

  // Inference kept batch and sequence dynamic and derived every head shape.
  module->walk([&](AttentionOp op) {
    EXPECT_EQ(op.getType(),
              RankedTensorType::get({kDyn, kDyn, s.heads, s.headDim}, lb.f32));
  });
  module->walk([&](MoEOp op) { EXPECT_EQ(op.getType(), lb.x.getType()); });
  expectRoundTrip();
}

TEST_F(BuildLayersTest, Qwen2MoELayer) {
  LayerBuilder lb(ctx, "model.layers.0.");
  lb.begin(*module, "qwen2_moe_layer", s.hidden);
  Value h = lb.rmsNorm(lb.x, "input_layernorm.weight", s.hidden, 1e-6);
  Value attn = buildGqaAttention(lb, s, h, /*qkvBias=*/true, 1e4);
  Value x = lb.add(lb.x, attn);
  h = lb.rmsNorm(x, "post_attention_layernorm.weight", s.hidden, 1e-6);
  auto routing = RoutingAttr::get(&ctx, s.experts, 4, ScoringFunc::softmax, 1,
                                  1, GroupScore::max, false, llvm::APFloat(0.0),
                                  llvm::APFloat(1.0), ArrayRef<int64_t>(),
                                  ArrayRef<int64_t>());
  Value moe = buildMoE(lb, s, h, routing, false, true, true, "shared_expert");
  lb.end(lb.add(x, moe));
  EXPECT_EQ(count<LinearOp>(), 4);
  int biased = 0;
  module->walk([&](LinearOp op) { biased += op.getBias() ? 1 : 0; });
  EXPECT_EQ(biased, 3) << "q, k and v carry biases, o_proj does not";
  expectRoundTrip();

  // Decomposition: router, dispatch, three grouped matmuls, combine, the
  // shared expert and its sigmoid gate.
  PassManager pm(&ctx);
  pm.addPass(createDecomposeMoEPass());
  ASSERT_TRUE(succeeded(pm.run(*module)));
  EXPECT_EQ(count<MoEOp>(), 0);
  EXPECT_EQ(count<RouterOp>(), 1);
  EXPECT_EQ(count<MoEDispatchOp>(), 1);
  EXPECT_EQ(count<GroupedMatmulOp>(), 3);
  EXPECT_EQ(count<MoECombineOp>(), 1);
  EXPECT_EQ(count<ActivationOp>(), 1);
  EXPECT_EQ(count<MulOp>(), 1);
  expectRoundTrip();
}

TEST_F(BuildLayersTest, DeepSeekV3Layer) {
  // MLA sizes: q_lora_rank 24, kv_lora_rank 32, nope 16, rope 8, v 16.
  const int64_t r = 24, c = 32, dn = 16, dr = 8, dv = 16;
  LayerBuilder lb(ctx, "model.layers.3.");
  lb.begin(*module, "deepseek_v3_layer", s.hidden);
  Value h = lb.rmsNorm(lb.x, "input_layernorm.weight", s.hidden, 1e-6);

  Value qa = lb.linear(h, "self_attn.q_a_proj", r, s.hidden);
  qa = lb.rmsNorm(qa, "self_attn.q_a_layernorm.weight", r, 1e-6);
  Value q = lb.linear(qa, "self_attn.q_b_proj", s.heads * (dn + dr), r);
  q = SplitHeadsOp::create(lb.b, lb.loc, q, s.heads);
  auto qSplit = SplitOp::create(lb.b, lb.loc, q, 3, ArrayRef<int64_t>{dn, dr});
  RopeAttr rope = defaultRope(ctx, dr, 1e4, RopeStyle::deinterleave);
  Value qPe =
      RopeOp::create(lb.b, lb.loc, qSplit.getResult(1), lb.positions, rope);
  Value ckv = lb.linear(h, "self_attn.kv_a_proj_with_mqa", c + dr, s.hidden);
  auto kvSplit =
      SplitOp::create(lb.b, lb.loc, ckv, 2, ArrayRef<int64_t>{c, dr});
  Value latent = lb.rmsNorm(kvSplit.getResult(0),
                            "self_attn.kv_a_layernorm.weight", c, 1e-6);
  Value kPe =
      RopeOp::create(lb.b, lb.loc, kvSplit.getResult(1), lb.positions, rope);
  Value kvB = lb.param("self_attn.kv_b_proj.weight", {s.heads * (dn + dv), c});
  auto mla = MLAAttentionOp::create(
      lb.b, lb.loc, qSplit.getResult(0), qPe, latent, kPe, kvB, lb.positions,
      lb.b.getF64FloatAttr(1.0 / std::sqrt(double(dn + dr))),
      /*c_kv_scale=*/FloatAttr(), /*k_pe_scale=*/FloatAttr());
  EXPECT_EQ(mla.getType(),
            RankedTensorType::get({kDyn, kDyn, s.heads, dv}, lb.f32));
  Value o = MergeHeadsOp::create(lb.b, lb.loc, mla);
  o = lb.linear(o, "self_attn.o_proj", s.hidden, s.heads * dv);
  Value x = lb.add(lb.x, o);
  h = lb.rmsNorm(x, "post_attention_layernorm.weight", s.hidden, 1e-6);
  auto routing = RoutingAttr::get(
      &ctx, s.experts, 2, ScoringFunc::sigmoid, /*nGroup=*/4, /*topkGroup=*/2,
      GroupScore::top2_sum, true, llvm::APFloat(1e-20), llvm::APFloat(2.5),
      ArrayRef<int64_t>(), ArrayRef<int64_t>());
  Value moe = buildMoE(lb, s, h, routing, true, true, false, "shared_experts");
  lb.end(lb.add(x, moe));
  expectRoundTrip();
}

TEST_F(BuildLayersTest, InferenceRejectsBadShapes) {
  // A builder-free check of the inference entry point: a [?, 64] input
  // against a [32, 48] weight must fail with a located diagnostic.
  OpBuilder b(&ctx);
  Type f32 = b.getF32Type();
  std::string message;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &d) {
    message = d.str();
    return success();
  });
  SmallVector<Type> types;
  auto x = RankedTensorType::get({kDyn, 64}, f32);
  auto w = RankedTensorType::get({32, 48}, f32);
  b.setInsertionPointToEnd(module->getBody());
  auto fn = func::FuncOp::create(b, b.getUnknownLoc(), "f",
                                 b.getFunctionType({x, w}, {}));
  Block *entry = fn.addEntryBlock();
  LinearOp::Adaptor adaptor(
      ValueRange{entry->getArgument(0), entry->getArgument(1)});
  EXPECT_TRUE(failed(
      LinearOp::inferReturnTypes(&ctx, b.getUnknownLoc(), adaptor, types)));
  EXPECT_NE(message.find("weight dimension 1 (48) does not match input "
                         "dimension 1 (64)"),
            std::string::npos)
      << message;
}

} // namespace
