//===- Quantize.cpp - compile-time weight and activation quantization
//------===//
//
// For every targeted GEMM: evaluate its weight from the checkpoint (a ds.param
// or a concat of them), quantize it with the scheme's block layout, record the
// new tensors for the output file and point the GEMM at a !ds.qtensor
// ds.param (or a narrower float param for bf16/f16). Activation schemes add
// ds.quantize or the fused ops' input_quant attributes.
//
//===----------------------------------------------------------------------===//

#include "dialects/DS/IR/DSOps.h"
#include "dialects/DS/IR/DSQuant.h"
#include "interpreter/Interpreter.h"
#include "passes/Passes.h"

#include "ds/support/Quant.h"
#include "ds/support/SafeTensors.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Regex.h"

#include <cstring>
#include <map>

#define DEBUG_TYPE "ds-quantize"

namespace mlir::ds {
#define GEN_PASS_DEF_QUANTIZEPASS
#include "passes/Passes.h.inc"
} // namespace mlir::ds

using namespace mlir;
using namespace mlir::ds;

namespace {

enum class Category { Linear, Experts, LmHead, Router };

StringRef categoryName(Category c) {
  switch (c) {
  case Category::Linear:
    return "linear";
  case Category::Experts:
    return "experts";
  case Category::LmHead:
    return "lm_head";
  case Category::Router:
    return "router";
  }
  return "";
}

/// What a scheme does to weights and activations.
struct Scheme {
  /// bf16/f16: round weights and run the GEMM in this type.
  FloatType castType;
  /// Otherwise: the weight storage and per-axis group (0: per channel).
  Type storage;
  int64_t group = 0;
  bool fp8Blocks = false;
  /// Activation storage (i8 / e4m3) and group (0: per token), if any.
  Type actStorage;
  int64_t actGroup = 0;
};

/// `bytes` of a float vector.
std::vector<uint8_t> floatBytes(const std::vector<float> &v) {
  std::vector<uint8_t> out(v.size() * sizeof(float));
  if (!v.empty())
    std::memcpy(out.data(), v.data(), out.size());
  return out;
}

std::string stackless(std::string name) {
  for (size_t p; (p = name.find('*')) != std::string::npos;)
    name.replace(p, 1, "{e}");
  return name;
}

struct QuantizePass : public mlir::ds::impl::QuantizePassBase<QuantizePass> {
  using Base::Base;

  void runOnOperation() override;

private:
  LogicalResult parseScheme(Location loc);
  bool isTargeted(Category c) const {
    return targetSet.contains(categoryName(c));
  }
  bool isExcluded(const WeightSources &sources);
  /// The quantized (or narrowed) replacement of `weight`, or a null value
  /// when the weight is left alone.
  FailureOr<Value> rewriteWeight(Operation *user, Value weight, Category c);
  FailureOr<Tensor> evaluate(const WeightSources &sources, Location loc);
  std::optional<float> staticScale(Value weight);
  void quantizeActivations(Operation *op, Value weight,
                           std::optional<float> scale = std::nullopt);
  LogicalResult narrow(Operation *op, Category c);

  Scheme s;
  llvm::StringSet<> targetSet;
  // Per-run state (shared_ptr: the pass must stay copyable for clonePass).
  std::vector<std::shared_ptr<llvm::Regex>> excludes;
  std::shared_ptr<::ds::Checkpoint> checkpoint;
  std::shared_ptr<CheckpointWeights> loader;
  std::vector<::ds::TensorToWrite> written;
  /// Key (sources + type) -> the new param's attributes.
  std::map<std::string, std::pair<Type, std::array<std::string, 3>>> done;
  std::map<std::string, float> ranges;
};

LogicalResult QuantizePass::parseScheme(Location loc) {
  MLIRContext *ctx = &getContext();
  s = Scheme();
  targetSet.clear();
  excludes.clear();
  written.clear();
  done.clear();
  ranges.clear();
  Builder b(ctx);
  if (scheme == "bf16") {
    s.castType = b.getBF16Type();
  } else if (scheme == "f16") {
    s.castType = b.getF16Type();
  } else if (scheme == "int8") {
    s.storage = b.getI8Type();
  } else if (scheme == "int4") {
    if (groupSize <= 0)
      return emitError(loc) << "ds-quantize: group-size must be positive, got "
                            << static_cast<int64_t>(groupSize.getValue());
    s.storage = zeroPoint ? IntegerType::get(ctx, 4, IntegerType::Unsigned)
                          : b.getIntegerType(4);
    s.group = groupSize;
  } else if (scheme == "w8a8") {
    s.storage = b.getI8Type();
    s.actStorage = b.getI8Type();
  } else if (scheme == "fp8") {
    s.storage = b.getType<Float8E4M3FNType>();
    s.fp8Blocks = true;
    s.actStorage = b.getType<Float8E4M3FNType>();
    s.actGroup = 128;
  } else {
    return emitError(loc) << "ds-quantize: unknown scheme '" << scheme
                          << "' (int8, int4, w8a8, fp8, bf16, f16)";
  }
  if (zeroPoint && scheme != "int4")
    return emitError(loc) << "ds-quantize: zero-point applies to int4 only";
  if (!calibrationPath.empty() && scheme != "w8a8")
    return emitError(loc) << "ds-quantize: calibration (static activation "
                             "scales) applies to w8a8 only";
  // DeepSeek-V3 keeps its output head out of FP8, and int4 deployments
  // (GPTQ, AWQ) keep it in 16 bits: by default those schemes leave it alone.
  if (targets.empty()) {
    targetSet = {"linear", "experts"};
    if (scheme != "fp8" && scheme != "int4")
      targetSet.insert("lm_head");
  }
  for (const std::string &t : targets) {
    if (t != "linear" && t != "experts" && t != "lm_head" && t != "router")
      return emitError(loc) << "ds-quantize: unknown target '" << t
                            << "' (linear, experts, lm_head, router)";
    targetSet.insert(t);
  }
  for (const std::string &pattern : exclude) {
    llvm::Regex re(pattern);
    std::string error;
    if (!re.isValid(error))
      return emitError(loc) << "ds-quantize: bad exclude pattern '" << pattern
                            << "': " << error;
    excludes.push_back(std::make_shared<llvm::Regex>(std::move(re)));
  }
  return success();
}

bool QuantizePass::isExcluded(const WeightSources &sources) {
  for (ParamOp p : sources.params)
    for (const std::shared_ptr<llvm::Regex> &re : excludes)
      if (re->match(p.getName()))
        return true;
  return false;
}

FailureOr<Tensor> QuantizePass::evaluate(const WeightSources &sources,
                                         Location loc) {
  SmallVector<Tensor> parts;
  for (ParamOp p : sources.params) {
    FailureOr<Tensor> t = loader->load(p);
    if (failed(t))
      return failure();
    parts.push_back(std::move(*t));
  }
  if (parts.size() == 1)
    return parts.front();
  // Concatenate along the axis.
  int64_t axis = sources.axis;
  SmallVector<int64_t> shape = parts.front().shape;
  shape[axis] = 0;
  for (const Tensor &t : parts)
    shape[axis] += t.shape[axis];
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d)
    inner *= shape[d];
  Tensor out = Tensor::floats(shape);
  int64_t offset = 0;
  for (const Tensor &t : parts) {
    int64_t n = t.shape[axis];
    for (int64_t o = 0; o < outer; ++o)
      std::copy_n(&t.f[o * n * inner], n * inner,
                  &out.f[(o * shape[axis] + offset) * inner]);
    offset += n;
  }
  return out;
}

FailureOr<Value> QuantizePass::rewriteWeight(Operation *user, Value weight,
                                             Category c) {
  if (!weight || !isTargeted(c))
    return Value();
  auto type = dyn_cast<RankedTensorType>(weight.getType());
  if (!type || !isa<FloatType>(type.getElementType()))
    return Value(); // already quantized, or not a float weight
  std::optional<WeightSources> sources = getWeightSources(weight);
  if (!sources) {
    user->emitWarning() << "ds-quantize: leaves a " << categoryName(c)
                        << " weight that is not a ds.param (or a concat of "
                           "them) unquantized";
    return Value();
  }
  if (isExcluded(*sources))
    return Value();
  auto element = cast<FloatType>(type.getElementType());
  if (s.castType && element == s.castType)
    return Value();
  std::string base = stackless(sources->key());
  Type newType;
  ::ds::QScheme q;
  if (s.castType) {
    newType = type.clone(s.castType);
  } else {
    SmallVector<int64_t> block(type.getRank(), 1);
    block.back() = s.group;
    if (s.fp8Blocks && type.getRank() >= 2) {
      block[type.getRank() - 1] = 128;
      block[type.getRank() - 2] = 128;
    }
    newType = QTensorType::get(&getContext(), type.getShape(), s.storage,
                               element, block);
    q = getQScheme(cast<QTensorType>(newType));
  }
  std::string key =
      base + " " +
      std::to_string(reinterpret_cast<uintptr_t>(newType.getAsOpaquePointer()));
  auto it = done.find(key);
  if (it == done.end()) {
    FailureOr<Tensor> t = evaluate(*sources, user->getLoc());
    if (failed(t))
      return failure();
    std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
    std::array<std::string, 3> names;
    if (s.castType) {
      names[0] = base + (s.castType.isBF16() ? ":bf16" : ":f16");
      ::ds::DType dt =
          s.castType.isBF16() ? ::ds::DType::BF16 : ::ds::DType::F16;
      std::vector<uint8_t> bytes(t->f.size() * 2);
      for (size_t i = 0; i < t->f.size(); ++i) {
        uint16_t bits = dt == ::ds::DType::BF16 ? ::ds::floatToBF16(t->f[i])
                                                : ::ds::floatToHalf(t->f[i]);
        std::memcpy(&bytes[2 * i], &bits, 2);
      }
      written.push_back({names[0], dt, shape, std::move(bytes)});
    } else {
      ::ds::QuantizeOptions options;
      options.searchClip = clipSearch && (q.storage == ::ds::QStorage::I4 ||
                                          q.storage == ::ds::QStorage::U4);
      ::ds::QuantizedTensor qt = ::ds::quantize(t->f.data(), shape, q, options);
      names[0] = base + ":q";
      names[1] = base + ":scale";
      written.push_back({names[0], ::ds::storageDType(q.storage),
                         ::ds::storageShape(shape, q.storage),
                         ::ds::encodeValues(qt)});
      written.push_back({names[1], ::ds::DType::F32,
                         ::ds::scaleShape(shape, q.block),
                         floatBytes(qt.scales)});
      if (!qt.zeros.empty()) {
        names[2] = base + ":zero";
        std::vector<uint8_t> zeros(qt.zeros.size());
        for (size_t i = 0; i < zeros.size(); ++i)
          zeros[i] = static_cast<uint8_t>(qt.zeros[i]);
        written.push_back({names[2], ::ds::DType::U8,
                           ::ds::scaleShape(shape, q.block), std::move(zeros)});
      }
    }
    it = done.emplace(key, std::make_pair(newType, names)).first;
  }
  const auto &names = it->second.second;
  OpBuilder b(user);
  Builder attrs(&getContext());
  auto param = ParamOp::create(
      b, weight.getLoc(), newType, attrs.getStringAttr(names[0]),
      DenseI64ArrayAttr(),
      names[1].empty() ? StringAttr() : attrs.getStringAttr(names[1]),
      names[2].empty() ? StringAttr() : attrs.getStringAttr(names[2]));
  return param.getResult();
}

std::optional<float> QuantizePass::staticScale(Value weight) {
  if (ranges.empty())
    return std::nullopt;
  std::optional<WeightSources> sources = getWeightSources(weight);
  if (!sources)
    return std::nullopt;
  float absmax = 0.0f;
  for (ParamOp p : sources->params) {
    auto it = ranges.find(p.getName().str());
    if (it == ranges.end())
      return std::nullopt;
    absmax = std::max(absmax, it->second);
  }
  return absmax / ::ds::qmax(*getQStorage(s.actStorage));
}

/// Replaces `op`'s float weight operands by quantized ones.
template <typename OpT>
LogicalResult replaceWeight(
    OpT op, OpOperand &operand, Category c,
    function_ref<FailureOr<Value>(Operation *, Value, Category)> rewrite) {
  FailureOr<Value> q = rewrite(op, operand.get(), c);
  if (failed(q))
    return failure();
  if (*q)
    operand.set(*q);
  return success();
}

Category gemmCategory(Operation *op) {
  for (Operation *user : op->getResult(0).getUsers()) {
    if (isa<RouterOp>(user))
      return Category::Router;
    if (isa<func::ReturnOp>(user))
      return Category::LmHead;
  }
  return Category::Linear;
}

/// bf16/f16: runs `op` in the narrow type with its weights narrowed, the
/// norm prologue and the residual epilogue of a fused linear kept outside.
LogicalResult QuantizePass::narrow(Operation *op, Category c) {
  auto rewrite = [&](Value w) { return rewriteWeight(op, w, c); };
  FloatType t = s.castType;
  OpBuilder b(op);
  Location loc = op->getLoc();
  auto truncate = [&](Value v) -> Value {
    auto type = cast<RankedTensorType>(v.getType());
    if (type.getElementType() == t)
      return v;
    return arith::TruncFOp::create(b, loc, type.clone(t), v);
  };
  auto isWide = [&](Value v) {
    auto type = dyn_cast<RankedTensorType>(v.getType());
    return type && type.getElementType() != t;
  };
  if (!isTargeted(c))
    return success();
  SmallVector<Value> inputs;
  Value result = op->getResult(0);
  if (!isWide(result))
    return success();
  // Every weight must narrow, or the op stays as it is.
  SmallVector<Value> oldWeights;
  if (auto l = dyn_cast<LinearOp>(op))
    oldWeights = {l.getWeight(), l.getBias()};
  else if (auto g = dyn_cast<GroupedMatmulOp>(op))
    oldWeights = {g.getWeight()};
  else if (auto m = dyn_cast<FusedMoEOp>(op))
    oldWeights = {m.getGateUp(), m.getDown()};
  else if (auto f = dyn_cast<FusedLinearOp>(op))
    oldWeights = {f.getWeight(), f.getBias()};
  SmallVector<Value> newWeights;
  for (Value w : oldWeights) {
    if (!w) {
      newWeights.push_back(Value());
      continue;
    }
    FailureOr<Value> n = rewrite(w);
    if (failed(n))
      return failure();
    if (!*n)
      return success();
    newWeights.push_back(*n);
  }
  Value narrowResult;
  if (auto l = dyn_cast<LinearOp>(op)) {
    narrowResult = LinearOp::create(b, loc, truncate(l.getInput()),
                                    newWeights[0], newWeights[1]);
  } else if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
    narrowResult = GroupedMatmulOp::create(b, loc, truncate(g.getInput()),
                                           newWeights[0], g.getOffsets());
  } else if (auto m = dyn_cast<FusedMoEOp>(op)) {
    narrowResult = FusedMoEOp::create(
        b, loc, truncate(m.getInput()), m.getWeights(), m.getIndices(),
        newWeights[0], newWeights[1], m.getActivationAttr(), ActQuantAttr(),
        ActQuantAttr());
  } else if (auto f = dyn_cast<FusedLinearOp>(op)) {
    Value h = f.getInput();
    if (f.getNormWeight())
      h = RMSNormOp::create(b, loc, h, f.getNormWeight(),
                            f.getNormEpsilonAttr());
    narrowResult = FusedLinearOp::create(
        b, loc, truncate(h), newWeights[0], Value(), newWeights[1], Value(),
        FloatAttr(), f.getActivationAttr(), f.getGatedAttr(), ActQuantAttr());
  }
  Value wide = arith::ExtFOp::create(b, loc, result.getType(), narrowResult);
  if (auto f = dyn_cast<FusedLinearOp>(op); f && f.getResidual())
    wide = arith::AddFOp::create(b, loc, f.getResidual(), wide);
  result.replaceAllUsesWith(wide);
  op->erase();
  return success();
}

/// `scale`: the static scale calibration gives the GEMM's input.
void QuantizePass::quantizeActivations(Operation *op, Value weight,
                                       std::optional<float> scale) {
  if (!s.actStorage || isa<QTensorType>(op->getOperand(0).getType()))
    return;
  // Only GEMMs whose weight was quantized get quantized inputs.
  if (!isa<QTensorType>(weight.getType()))
    return;
  MLIRContext *ctx = &getContext();
  auto attr = ActQuantAttr::get(ctx, s.actStorage, scale ? 0 : s.actGroup,
                                llvm::APFloat(double(scale ? *scale : 0.0f)));
  if (auto f = dyn_cast<FusedLinearOp>(op)) {
    f.setInputQuantAttr(attr);
    return;
  }
  if (auto m = dyn_cast<FusedMoEOp>(op)) {
    m.setInputQuantAttr(attr);
    m.setHiddenQuantAttr(attr);
    return;
  }
  OpBuilder b(op);
  Value q = QuantizeOp::create(b, op->getLoc(), op->getOperand(0), attr);
  op->setOperand(0, q);
}

void QuantizePass::runOnOperation() {
  ModuleOp module = getOperation();
  Location loc = module.getLoc();
  if (failed(parseScheme(loc)))
    return signalPassFailure();
  if (weightsPath.empty() || outputPath.empty()) {
    emitError(loc) << "ds-quantize needs weights=<checkpoint> to read the "
                      "original weights and output=<file.safetensors> to "
                      "write the quantized ones";
    return signalPassFailure();
  }
  std::string error;
  FailureOr<std::unique_ptr<::ds::Checkpoint>> ckpt =
      openModuleCheckpoint(module, weightsPath, error);
  if (failed(ckpt)) {
    emitError(loc) << "ds-quantize: " << error;
    return signalPassFailure();
  }
  // Weights quantized by an earlier run (ds.weight_files) are found too.
  checkpoint = std::move(*ckpt);
  loader = std::make_shared<CheckpointWeights>(*checkpoint);
  if (!calibrationPath.empty()) {
    auto buffer = llvm::MemoryBuffer::getFile(calibrationPath);
    if (!buffer) {
      emitError(loc) << "ds-quantize: cannot read calibration '"
                     << calibrationPath << "': " << buffer.getError().message();
      return signalPassFailure();
    }
    llvm::Expected<llvm::json::Value> json =
        llvm::json::parse((*buffer)->getBuffer());
    const llvm::json::Object *root = json ? json->getAsObject() : nullptr;
    const llvm::json::Object *inputs =
        root ? root->getObject("gemm_inputs") : nullptr;
    if (!json)
      llvm::consumeError(json.takeError());
    if (!root || root->getString("format") != "ds-activation-ranges" ||
        !inputs) {
      emitError(loc) << "ds-quantize: " << calibrationPath
                     << " is not a ds activation-range file (ds-run "
                        "--calibrate)";
      return signalPassFailure();
    }
    for (const auto &[name, value] : *inputs) {
      std::optional<double> v = value.getAsNumber();
      if (!v || !(*v >= 0.0)) {
        emitError(loc) << "ds-quantize: " << calibrationPath
                       << ": bad range for '" << name.str() << "'";
        return signalPassFailure();
      }
      ranges[name.str()] = static_cast<float>(*v);
    }
  }

  // Activation schemes need the MoE block's steps to attach quantization to.
  if (s.actStorage || s.castType) {
    RewritePatternSet patterns(&getContext());
    populateDecomposeMoEPatterns(patterns);
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return signalPassFailure();
  }

  SmallVector<Operation *> gemms;
  module.walk([&](Operation *op) {
    if (isa<LinearOp, FusedLinearOp, FusedRouterOp, GroupedMatmulOp, FusedMoEOp,
            MoEOp>(op))
      gemms.push_back(op);
  });
  auto rewrite = [&](Operation *user, Value w, Category c) {
    return rewriteWeight(user, w, c);
  };
  for (Operation *op : gemms) {
    LogicalResult ok = success();
    if (s.castType) {
      Category c = isa<GroupedMatmulOp, FusedMoEOp>(op) ? Category::Experts
                   : isa<FusedRouterOp>(op)             ? Category::Router
                                                        : gemmCategory(op);
      if (isa<LinearOp, FusedLinearOp, GroupedMatmulOp, FusedMoEOp>(op))
        ok = narrow(op, c);
      else if (auto r = dyn_cast<FusedRouterOp>(op))
        ok = replaceWeight(r, r.getWeightMutable(), c, rewrite);
    } else if (auto l = dyn_cast<LinearOp>(op)) {
      std::optional<float> scale = staticScale(l.getWeight());
      ok = replaceWeight(l, l.getWeightMutable(), gemmCategory(op), rewrite);
      if (succeeded(ok) && gemmCategory(op) != Category::Router)
        quantizeActivations(op, l.getWeight(), scale);
    } else if (auto f = dyn_cast<FusedLinearOp>(op)) {
      std::optional<float> scale = staticScale(f.getWeight());
      ok = replaceWeight(f, f.getWeightMutable(), gemmCategory(op), rewrite);
      if (succeeded(ok))
        quantizeActivations(op, f.getWeight(), scale);
    } else if (auto r = dyn_cast<FusedRouterOp>(op)) {
      ok = replaceWeight(r, r.getWeightMutable(), Category::Router, rewrite);
    } else if (auto g = dyn_cast<GroupedMatmulOp>(op)) {
      ok = replaceWeight(g, g.getWeightMutable(), Category::Experts, rewrite);
      if (succeeded(ok))
        quantizeActivations(op, g.getWeight());
    } else if (auto m = dyn_cast<FusedMoEOp>(op)) {
      ok = replaceWeight(m, m.getGateUpMutable(), Category::Experts, rewrite);
      if (succeeded(ok))
        ok = replaceWeight(m, m.getDownMutable(), Category::Experts, rewrite);
      // Both GEMMs take quantized inputs only when both weights are.
      if (succeeded(ok) && isa<QTensorType>(m.getDown().getType()))
        quantizeActivations(op, m.getGateUp());
    } else if (auto m = dyn_cast<MoEOp>(op)) {
      for (OpOperand *o : {&m.getExpertGateMutable(), &m.getExpertUpMutable(),
                           &m.getExpertDownMutable()})
        if (succeeded(ok))
          ok = replaceWeight(m, *o, Category::Experts, rewrite);
      for (MutableOperandRange range :
           {m.getSharedGateMutable(), m.getSharedUpMutable(),
            m.getSharedDownMutable()})
        if (succeeded(ok) && range.size() == 1)
          ok = replaceWeight(m, range[0], Category::Linear, rewrite);
      if (succeeded(ok))
        ok = replaceWeight(m, m.getRouterWeightMutable(), Category::Router,
                           rewrite);
    }
    if (failed(ok))
      return signalPassFailure();
  }

  // The original params and concats are dead now.
  bool erased = true;
  while (erased) {
    erased = false;
    module.walk([&](Operation *op) {
      if (isa<ParamOp, tensor::ConcatOp>(op) && op->use_empty()) {
        op->erase();
        erased = true;
      }
    });
  }

  if (written.empty())
    return;
  SmallString<256> absolute(outputPath);
  if (std::error_code ec = llvm::sys::fs::make_absolute(absolute)) {
    emitError(loc) << "ds-quantize: " << outputPath << ": " << ec.message();
    return signalPassFailure();
  }
  if (absl::Status st = ::ds::writeSafeTensors(
          absolute.str().str(), written,
          {{"format", "ds-quantized"}, {"scheme", scheme}});
      !st.ok()) {
    emitError(loc) << "ds-quantize: " << std::string(st.message());
    return signalPassFailure();
  }
  SmallVector<Attribute> files;
  if (auto existing = module->getAttrOfType<ArrayAttr>("ds.weight_files"))
    files.append(existing.begin(), existing.end());
  files.push_back(StringAttr::get(&getContext(), absolute));
  module->setAttr("ds.weight_files", ArrayAttr::get(&getContext(), files));
}

} // namespace
