//===- Importer.cpp - Hugging Face checkpoint to ds IR --------------------===//
//
// Emits the prefill and decode functions layer by layer through the ds
// builders (result types are inferred), validating each named weight
// against the checkpoint as it goes.
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/Importer.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/InitAllDialects.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace ds;
using namespace ds::hf;

namespace {

constexpr int64_t kDyn = ShapedType::kDynamic;
/// transformers hard-codes this eps for DeepSeek's q_a/kv_a layernorms.
constexpr double kLatentNormEps = 1e-6;

std::string shapeString(ArrayRef<int64_t> shape) {
  return "[" +
         llvm::join(llvm::map_range(
                        shape, [](int64_t d) { return std::to_string(d); }),
                    ", ") +
         "]";
}

class ModelBuilder {
public:
  ModelBuilder(MLIRContext &ctx, const ModelConfig &c,
               const ds::Checkpoint &ckpt, const ImportOptions &opts,
               ModuleOp module)
      : ctx(ctx), c(c), ckpt(ckpt), opts(opts), b(&ctx), module(module) {}

  LogicalResult build();

private:
  struct Caches {
    Value first, second;
  };

  LogicalResult buildFunction(StringRef name, bool decode);
  Value param(Location loc, const std::string &name, ArrayRef<int64_t> shape);
  Value stackedParam(Location loc, const std::string &pattern,
                     ArrayRef<int64_t> shape);
  /// Checks that FP8 weight `name` of `shape` has its DeepSeek block scales
  /// `<name>_scale_inv` (F32, ceil(shape / weight_block_size)).
  bool checkFp8Scales(Location loc, const std::string &name,
                      ArrayRef<int64_t> shape);
  bool has(const std::string &name) const { return ckpt.find(name) != nullptr; }
  Value linear(Location loc, Value x, const std::string &name, int64_t out,
               int64_t in, bool bias);
  Value rmsNorm(Location loc, Value x, const std::string &name, int64_t dim,
                double eps);
  RopeAttr ropeAttr(int64_t dim) const;
  Value gqaAttention(Location loc, const std::string &p, Value x, Value pos,
                     Caches &caches);
  Value mlaAttention(Location loc, const std::string &p, Value x, Value pos,
                     Caches &caches);
  Value denseMlp(Location loc, const std::string &p, Value x);
  Value moe(Location loc, const std::string &p, Value x);
  SmallVector<Type> cacheTypes() const;

  MLIRContext &ctx;
  const ModelConfig &c;
  const ds::Checkpoint &ckpt;
  const ImportOptions &opts;
  OpBuilder b;
  ModuleOp module;
  Type elt;
  int64_t cacheLen = 0;
  bool failedParams = false;
};

Value ModelBuilder::param(Location loc, const std::string &name,
                          ArrayRef<int64_t> shape) {
  const ds::TensorView *t = ckpt.find(name);
  if (!t) {
    emitError(loc) << "checkpoint has no tensor '" << name << "'";
    failedParams = true;
  } else if (ArrayRef<int64_t>(t->shape) != shape) {
    emitError(loc) << "tensor '" << name << "' in " << t->file << " has shape "
                   << shapeString(t->shape) << ", config.json implies "
                   << shapeString(shape);
    failedParams = true;
  } else if (t->dtype == ds::DType::F8E4M3) {
    if (!c.fp8WeightBlock || shape.size() != 2) {
      emitError(loc) << "tensor '" << name << "' in " << t->file
                     << " is FP8 e4m3, but "
                     << (c.fp8WeightBlock
                             ? "only 2-D weights are block-quantized"
                             : "config.json has no FP8 quantization_config");
      failedParams = true;
    } else if (checkFp8Scales(loc, name, shape)) {
      auto [bn, bk] = *c.fp8WeightBlock;
      auto type = QTensorType::get(&ctx, shape, b.getType<Float8E4M3FNType>(),
                                   cast<FloatType>(elt), {bn, bk});
      return ParamOp::create(
          b, loc, type, b.getStringAttr(name), DenseI64ArrayAttr(),
          b.getStringAttr(name + "_scale_inv"), StringAttr(), StringAttr(),
          FlatSymbolRefAttr(), shard::GridAxesArrayAttr());
    }
  } else if (!ds::isFloatDType(t->dtype)) {
    emitError(loc) << "tensor '" << name << "' in " << t->file << " has dtype "
                   << std::string(ds::dtypeName(t->dtype))
                   << "; floating-point weights are expected";
    failedParams = true;
  }
  return ParamOp::create(b, loc, RankedTensorType::get(shape, elt), name);
}

bool ModelBuilder::checkFp8Scales(Location loc, const std::string &name,
                                  ArrayRef<int64_t> shape) {
  auto [bn, bk] = *c.fp8WeightBlock;
  std::vector<int64_t> want = {(shape[0] + bn - 1) / bn,
                               (shape[1] + bk - 1) / bk};
  std::string scales = name + "_scale_inv";
  const ds::TensorView *s = ckpt.find(scales);
  if (!s) {
    emitError(loc) << "FP8 weight '" << name << "' has no block scales '"
                   << scales << "'";
  } else if (s->dtype != ds::DType::F32 || s->shape != want) {
    emitError(loc) << "block scales '" << scales << "' in " << s->file
                   << " are " << std::string(ds::dtypeName(s->dtype)) << " "
                   << shapeString(s->shape) << ", weight_block_size [" << bn
                   << ", " << bk << "] implies F32 " << shapeString(want);
  } else {
    return true;
  }
  failedParams = true;
  return false;
}

Value ModelBuilder::stackedParam(Location loc, const std::string &pattern,
                                 ArrayRef<int64_t> shape) {
  auto [prefix, suffix] = StringRef(pattern).split('*');
  // DeepSeek FP8 experts: e4m3 values and block scales per expert.
  if (const ds::TensorView *first = ckpt.find((prefix + "0" + suffix).str());
      first && first->dtype == ds::DType::F8E4M3 && c.fp8WeightBlock &&
      shape.size() == 3) {
    bool ok = true;
    for (int64_t e = 0; e < shape[0] && ok; ++e) {
      std::string name = (prefix + Twine(e) + suffix).str();
      const ds::TensorView *t = ckpt.find(name);
      if (!t || t->dtype != ds::DType::F8E4M3 ||
          ArrayRef<int64_t>(t->shape) != shape.drop_front()) {
        emitError(loc) << "expert weight '" << name
                       << "' is missing or not FP8 e4m3 "
                       << shapeString(shape.drop_front()) << " like expert 0's";
        failedParams = true;
        ok = false;
      } else {
        ok = checkFp8Scales(loc, name, shape.drop_front());
      }
    }
    auto [bn, bk] = *c.fp8WeightBlock;
    auto type = QTensorType::get(&ctx, shape, b.getType<Float8E4M3FNType>(),
                                 cast<FloatType>(elt), {1, bn, bk});
    return ParamOp::create(
        b, loc, type, b.getStringAttr(pattern), DenseI64ArrayAttr(),
        b.getStringAttr(pattern + "_scale_inv"), StringAttr(), StringAttr(),
        FlatSymbolRefAttr(), shard::GridAxesArrayAttr());
  }
  for (int64_t e = 0; e < shape[0]; ++e) {
    std::string name = (prefix + Twine(e) + suffix).str();
    const ds::TensorView *t = ckpt.find(name);
    if (t && t->dtype == ds::DType::F8E4M3 && e > 0) {
      emitError(loc) << "expert weight '" << name
                     << "' is FP8 e4m3 but expert 0's is not";
      failedParams = true;
      break;
    }
    if (!t || ArrayRef<int64_t>(t->shape) != shape.drop_front() ||
        !ds::isFloatDType(t->dtype) || t->dtype == ds::DType::F8E4M3) {
      // Reuse param()'s diagnostics for the first bad expert.
      OpBuilder::InsertionGuard guard(b);
      Value probe = param(loc, name, shape.drop_front());
      probe.getDefiningOp()->erase();
      return ParamOp::create(b, loc, RankedTensorType::get(shape, elt),
                             pattern);
    }
  }
  return ParamOp::create(b, loc, RankedTensorType::get(shape, elt), pattern);
}

Value ModelBuilder::linear(Location loc, Value x, const std::string &name,
                           int64_t out, int64_t in, bool bias) {
  Value w = param(loc, name + ".weight", {out, in});
  // Trust tensor presence for biases, and require them when the config says.
  Value bv = (bias || has(name + ".bias")) ? param(loc, name + ".bias", {out})
                                           : Value();
  return LinearOp::create(b, loc, x, w, bv);
}

Value ModelBuilder::rmsNorm(Location loc, Value x, const std::string &name,
                            int64_t dim, double eps) {
  return RMSNormOp::create(b, loc, x, param(loc, name, {dim}),
                           b.getF64FloatAttr(eps));
}

RopeAttr ModelBuilder::ropeAttr(int64_t dim) const {
  const RopeConfig &r = c.rope;
  return RopeAttr::get(&ctx, dim, llvm::APFloat(r.theta), c.ropeStyle,
                       r.scaling, llvm::APFloat(r.factor),
                       r.originalMaxPosition, llvm::APFloat(r.betaFast),
                       llvm::APFloat(r.betaSlow), llvm::APFloat(r.mscale),
                       llvm::APFloat(r.mscaleAllDim),
                       llvm::APFloat(r.attentionFactor), r.truncate);
}

SmallVector<Type> ModelBuilder::cacheTypes() const {
  if (c.isMLA())
    return {RankedTensorType::get({kDyn, cacheLen, c.kvLoraRank}, elt),
            RankedTensorType::get({kDyn, cacheLen, c.qkRopeHeadDim}, elt)};
  auto kv =
      RankedTensorType::get({kDyn, cacheLen, c.numKvHeads, c.headDim}, elt);
  return {kv, kv};
}

Value ModelBuilder::gqaAttention(Location loc, const std::string &p, Value x,
                                 Value pos, Caches &caches) {
  int64_t h = c.hiddenSize, d = c.headDim;
  bool qkvBias = c.qkvBias || c.attentionBias;
  Value q = linear(loc, x, p + "q_proj", c.numHeads * d, h, qkvBias);
  Value k = linear(loc, x, p + "k_proj", c.numKvHeads * d, h, qkvBias);
  Value v = linear(loc, x, p + "v_proj", c.numKvHeads * d, h, qkvBias);
  q = SplitHeadsOp::create(b, loc, q, c.numHeads);
  k = SplitHeadsOp::create(b, loc, k, c.numKvHeads);
  v = SplitHeadsOp::create(b, loc, v, c.numKvHeads);
  if (c.qkNorm) {
    q = rmsNorm(loc, q, p + "q_norm.weight", d, c.rmsNormEps);
    k = rmsNorm(loc, k, p + "k_norm.weight", d, c.rmsNormEps);
  }
  RopeAttr rope = ropeAttr(d);
  q = RopeOp::create(b, loc, q, pos, rope);
  k = RopeOp::create(b, loc, k, pos, rope);
  caches.first =
      CacheUpdateOp::create(b, loc, caches.first, pos, k, /*kv_scale=*/{});
  caches.second =
      CacheUpdateOp::create(b, loc, caches.second, pos, v, /*kv_scale=*/{});
  IntegerAttr window =
      c.slidingWindow ? b.getI64IntegerAttr(*c.slidingWindow) : IntegerAttr();
  Value o = AttentionOp::create(b, loc, q, caches.first, caches.second, pos,
                                b.getF64FloatAttr(c.attentionScale()), window,
                                /*k_scale=*/{}, /*v_scale=*/{});
  o = MergeHeadsOp::create(b, loc, o);
  return linear(loc, o, p + "o_proj", h, c.numHeads * d, c.attentionBias);
}

Value ModelBuilder::mlaAttention(Location loc, const std::string &p, Value x,
                                 Value pos, Caches &caches) {
  int64_t h = c.hiddenSize, heads = c.numHeads;
  int64_t dn = c.qkNopeHeadDim, dr = c.qkRopeHeadDim, dv = c.vHeadDim;
  int64_t kvRank = c.kvLoraRank;
  Value q;
  if (c.qLoraRank > 0) {
    Value qa = linear(loc, x, p + "q_a_proj", c.qLoraRank, h, c.attentionBias);
    qa = rmsNorm(loc, qa, p + "q_a_layernorm.weight", c.qLoraRank,
                 kLatentNormEps);
    q = linear(loc, qa, p + "q_b_proj", heads * (dn + dr), c.qLoraRank, false);
  } else {
    q = linear(loc, x, p + "q_proj", heads * (dn + dr), h, false);
  }
  q = SplitHeadsOp::create(b, loc, q, heads);
  auto qs = SplitOp::create(b, loc, q, 3, ArrayRef<int64_t>{dn, dr});
  RopeAttr rope = ropeAttr(dr);
  Value qPe = RopeOp::create(b, loc, qs.getResult(1), pos, rope);
  Value ckv =
      linear(loc, x, p + "kv_a_proj_with_mqa", kvRank + dr, h, c.attentionBias);
  auto ks = SplitOp::create(b, loc, ckv, 2, ArrayRef<int64_t>{kvRank, dr});
  Value latent = rmsNorm(loc, ks.getResult(0), p + "kv_a_layernorm.weight",
                         kvRank, kLatentNormEps);
  Value kPe = RopeOp::create(b, loc, ks.getResult(1), pos, rope);
  caches.first = CacheUpdateOp::create(b, loc, caches.first, pos, latent,
                                       /*kv_scale=*/{});
  caches.second =
      CacheUpdateOp::create(b, loc, caches.second, pos, kPe, /*kv_scale=*/{});
  Value kvB = param(loc, p + "kv_b_proj.weight", {heads * (dn + dv), kvRank});
  Value o = MLAAttentionOp::create(b, loc, qs.getResult(0), qPe, caches.first,
                                   caches.second, kvB, pos,
                                   b.getF64FloatAttr(c.attentionScale()),
                                   /*c_kv_scale=*/{}, /*k_pe_scale=*/{});
  o = MergeHeadsOp::create(b, loc, o);
  return linear(loc, o, p + "o_proj", h, heads * dv, c.attentionBias);
}

Value ModelBuilder::denseMlp(Location loc, const std::string &p, Value x) {
  int64_t h = c.hiddenSize, i = c.intermediateSize;
  Value g = linear(loc, x, p + "gate_proj", i, h, false);
  Value u = linear(loc, x, p + "up_proj", i, h, false);
  Value a =
      SwiGLUOp::create(b, loc, g, u, ActivationAttr::get(&ctx, c.hiddenAct));
  return linear(loc, a, p + "down_proj", h, i, false);
}

Value ModelBuilder::moe(Location loc, const std::string &layer, Value x) {
  int64_t h = c.hiddenSize, e = c.numExperts, i = c.moeIntermediateSize;
  bool mixtral = c.arch == Arch::Mixtral;
  std::string fused = layer + "mlp.experts.gate_up_proj";
  // Mixtral's legacy names live under block_sparse_moe with w1/w3/w2; the
  // fused (transformers v5) layout is mlp.experts.{gate_up_proj,down_proj}.
  bool useFused = has(fused);
  std::string p = (mixtral && !useFused && !has(layer + "mlp.gate.weight"))
                      ? layer + "block_sparse_moe."
                      : layer + "mlp.";
  Value router = param(loc, p + "gate.weight", {e, h});
  Value bias = c.scoreCorrectionBias
                   ? param(loc, p + "gate.e_score_correction_bias", {e})
                   : Value();
  Value gate, up, down;
  if (useFused) {
    Value gateUp = param(loc, fused, {e, 2 * i, h});
    auto split = SplitOp::create(b, loc, gateUp, 1, ArrayRef<int64_t>{i, i});
    gate = split.getResult(0);
    up = split.getResult(1);
    down = param(loc, layer + "mlp.experts.down_proj", {e, h, i});
  } else if (mixtral) {
    gate = stackedParam(loc, p + "experts.*.w1.weight", {e, i, h});
    up = stackedParam(loc, p + "experts.*.w3.weight", {e, i, h});
    down = stackedParam(loc, p + "experts.*.w2.weight", {e, h, i});
  } else {
    gate = stackedParam(loc, p + "experts.*.gate_proj.weight", {e, i, h});
    up = stackedParam(loc, p + "experts.*.up_proj.weight", {e, i, h});
    down = stackedParam(loc, p + "experts.*.down_proj.weight", {e, h, i});
  }
  Value sg, su, sd, seg;
  if (c.sharedIntermediateSize > 0) {
    int64_t is = c.sharedIntermediateSize;
    std::string s = p + (c.isMLA() ? "shared_experts." : "shared_expert.");
    sg = param(loc, s + "gate_proj.weight", {is, h});
    su = param(loc, s + "up_proj.weight", {is, h});
    sd = param(loc, s + "down_proj.weight", {h, is});
    if (c.sharedExpertGate)
      seg = param(loc, p + "shared_expert_gate.weight", {1, h});
  }
  auto routing = RoutingAttr::get(&ctx, e, c.topK, c.scoring, c.nGroup,
                                  c.topkGroup, c.groupScore, c.normTopkProb,
                                  llvm::APFloat(c.normEpsilon),
                                  llvm::APFloat(c.routedScalingFactor),
                                  ArrayRef<int64_t>(), ArrayRef<int64_t>());
  return MoEOp::create(b, loc, x, router, bias, gate, up, down, sg, su, sd, seg,
                       routing, ActivationAttr::get(&ctx, c.hiddenAct),
                       FlatSymbolRefAttr(), DenseI16ArrayAttr(), UnitAttr());
}

LogicalResult ModelBuilder::buildFunction(StringRef name, bool decode) {
  int64_t s = decode ? 1 : kDyn;
  Type i64 = b.getI64Type();
  auto ids = RankedTensorType::get({kDyn, s}, i64);
  SmallVector<Type> inputs = {ids, ids};
  SmallVector<Type> perLayer = cacheTypes();
  for (int64_t l = 0; l < c.numLayers; ++l)
    inputs.append(perLayer);
  SmallVector<Type> results = {
      RankedTensorType::get({kDyn, s, c.vocabSize}, elt)};
  results.append(inputs.begin() + 2, inputs.end());
  b.setInsertionPointToEnd(module.getBody());
  Location fnLoc = NameLoc::get(b.getStringAttr(name));
  auto fn =
      func::FuncOp::create(b, fnLoc, name, b.getFunctionType(inputs, results));
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value tokens = entry->getArgument(0), pos = entry->getArgument(1);

  Location embLoc = NameLoc::get(b.getStringAttr("model.embed_tokens"));
  Value embed =
      param(embLoc, "model.embed_tokens.weight", {c.vocabSize, c.hiddenSize});
  Value x = EmbeddingOp::create(b, embLoc, embed, tokens, FlatSymbolRefAttr(),
                                DenseI16ArrayAttr());
  SmallVector<Value> outCaches;
  for (int64_t l = 0; l < c.numLayers; ++l) {
    if (opts.progress && !decode)
      opts.progress(l, c.numLayers);
    std::string p = llvm::formatv("model.layers.{0}.", l).str();
    Location loc = NameLoc::get(b.getStringAttr(StringRef(p).drop_back()));
    Caches caches{entry->getArgument(2 + 2 * l), entry->getArgument(3 + 2 * l)};
    Value n = rmsNorm(loc, x, p + "input_layernorm.weight", c.hiddenSize,
                      c.rmsNormEps);
    Value attn = c.isMLA()
                     ? mlaAttention(loc, p + "self_attn.", n, pos, caches)
                     : gqaAttention(loc, p + "self_attn.", n, pos, caches);
    x = arith::AddFOp::create(b, loc, x, attn);
    n = rmsNorm(loc, x, p + "post_attention_layernorm.weight", c.hiddenSize,
                c.rmsNormEps);
    Value ffn = c.moeLayers[l] ? moe(loc, p, n) : denseMlp(loc, p + "mlp.", n);
    x = arith::AddFOp::create(b, loc, x, ffn);
    outCaches.push_back(caches.first);
    outCaches.push_back(caches.second);
    if (failedParams)
      return failure();
  }
  Location headLoc = NameLoc::get(b.getStringAttr("lm_head"));
  x = rmsNorm(headLoc, x, "model.norm.weight", c.hiddenSize, c.rmsNormEps);
  std::string headName =
      c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  Value head = param(headLoc, headName, {c.vocabSize, c.hiddenSize});
  Value logits = LinearOp::create(b, headLoc, x, head, Value());
  SmallVector<Value> returns = {logits};
  returns.append(outCaches);
  func::ReturnOp::create(b, fnLoc, returns);
  return failure(failedParams);
}

LogicalResult ModelBuilder::build() {
  if (opts.dtype == "f32")
    elt = b.getF32Type();
  else if (opts.dtype == "bf16")
    elt = b.getBF16Type();
  else if (opts.dtype == "f16")
    elt = b.getF16Type();
  else
    return emitError(UnknownLoc::get(&ctx))
           << "unknown import dtype '" << opts.dtype << "' (f32, bf16 or f16)";
  if (opts.maxCacheLen < 0 || opts.maxCacheLen > c.maxPositionEmbeddings)
    return emitError(UnknownLoc::get(&ctx))
           << "a KV cache of " << opts.maxCacheLen
           << " positions; the model has max_position_embeddings "
           << c.maxPositionEmbeddings << " (" << c.path << ")";
  cacheLen = opts.maxCacheLen > 0
                 ? opts.maxCacheLen
                 : std::min<int64_t>(c.maxPositionEmbeddings, 4096);
  if (c.fp8WeightBlock) {
    // An FP8 quantization_config over a checkpoint without FP8 tensors (a
    // dequantized copy that kept its config) would be imported as if it
    // held what it does not say; refuse it.
    bool anyFp8 = false;
    for (const std::string &name : ckpt.names())
      if (const ds::TensorView *t = ckpt.find(name))
        anyFp8 |= t->dtype == ds::DType::F8E4M3;
    if (!anyFp8)
      return emitError(UnknownLoc::get(&ctx))
             << c.path
             << ": quantization_config declares FP8 weights, but the "
                "checkpoint has no F8_E4M3 tensor (remove "
                "quantization_config for a dequantized checkpoint)";
  }
  for (const std::string &name : ckpt.names())
    if (!c.fp8WeightBlock && StringRef(name).ends_with(".weight_scale_inv"))
      return emitError(NameLoc::get(b.getStringAttr(name)))
             << "tensor '" << name
             << "' is an FP8 block scale, but config.json has no FP8 "
                "quantization_config";
  SmallVector<NamedAttribute> info = {
      b.getNamedAttr("arch", b.getStringAttr(archName(c.arch))),
      b.getNamedAttr("num_layers", b.getI64IntegerAttr(c.numLayers)),
      b.getNamedAttr("vocab_size", b.getI64IntegerAttr(c.vocabSize)),
      b.getNamedAttr("max_cache_len", b.getI64IntegerAttr(cacheLen)),
  };
  if (!c.eosTokenIds.empty())
    info.push_back(
        b.getNamedAttr("eos_token_ids", b.getDenseI64ArrayAttr(c.eosTokenIds)));
  module->setAttr("ds.model", b.getDictionaryAttr(info));
  if (failed(buildFunction("prefill", /*decode=*/false)) ||
      failed(buildFunction("decode", /*decode=*/true)))
    return failure();
  return verify(module);
}

} // namespace

OwningOpRef<ModuleOp> ds::hf::importModel(MLIRContext &context,
                                          const ModelConfig &config,
                                          const ds::Checkpoint &checkpoint,
                                          const ImportOptions &options) {
  DialectRegistry registry;
  registerAllDialects(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
  OwningOpRef<ModuleOp> module =
      ModuleOp::create(FileLineColLoc::get(&context, config.path, 0, 0));
  ModelBuilder builder(context, config, checkpoint, options, *module);
  if (failed(builder.build()))
    return {};
  return module;
}

OwningOpRef<ModuleOp>
ds::hf::importModelDirectory(MLIRContext &context, llvm::StringRef dir,
                             const ImportOptions &options) {
  // The messages name the file; the location adds nothing.
  Location loc = UnknownLoc::get(&context);
  llvm::Expected<ModelConfig> config = loadModelConfig(dir);
  if (!config) {
    emitError(loc) << llvm::toString(config.takeError());
    return {};
  }
  absl::StatusOr<std::unique_ptr<ds::Checkpoint>> checkpoint =
      ds::Checkpoint::open(dir.str());
  if (!checkpoint.ok()) {
    emitError(loc) << std::string(checkpoint.status().message());
    return {};
  }
  return importModel(context, *config, **checkpoint, options);
}
