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

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSQuant.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Utils/WeightRewriter.h"
#include "ds/weights/Weights.h"

#include "ds/support/Quant.h"
#include "ds/support/SafeTensors.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Parallel.h"

#include <cstring>
#include <map>

#define DEBUG_TYPE "ds-quantize"

namespace ds {
#define GEN_PASS_DEF_QUANTIZEPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

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
  /// int4: scales rounded to f16 and stored as f16.
  bool halfScales = false;
};

/// The bytes of floats stored as `dtype` (F32, or BF16 / F16 rounded to
/// nearest even).
std::vector<uint8_t> floatBytes(ArrayRef<float> v,
                                ds::DType dtype = ds::DType::F32) {
  if (dtype == ds::DType::F32) {
    std::vector<uint8_t> out(v.size() * sizeof(float));
    if (!v.empty())
      std::memcpy(out.data(), v.data(), out.size());
    return out;
  }
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    uint16_t bits = dtype == ds::DType::BF16 ? ds::floatToBF16(v[i])
                                             : ds::floatToHalf(v[i]);
    std::memcpy(&out[2 * i], &bits, 2);
  }
  return out;
}

/// The zero points of unsigned storage as the checkpoint stores them (u8).
std::vector<uint8_t> zeroBytes(const ds::QuantizedTensor &q) {
  std::vector<uint8_t> out(q.zeros.size());
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<uint8_t>(q.zeros[i]);
  return out;
}

/// Quantizes the weight `reader` reads with `scheme` and gives `sink` its
/// values (storage bytes), scales (`scaleDType`) and zero points (u8, for
/// unsigned storage), named by `names`. When the scheme's blocks are one
/// index long on every axis but the last two (per row, per K group, an
/// expert stack quantized expert by expert, FP8's 128x128 tiles), the
/// weight is read, quantized and encoded in slices of rows, in parallel,
/// each written into its place: the same blocks, so the same bytes, and a
/// real-width expert stack is never whole in memory, in f32 or encoded.
LogicalResult quantizeInto(const WeightReader &reader,
                           const ds::QScheme &scheme,
                           const ds::QuantizeOptions &options,
                           ds::DType scaleDType, const NewParamNames &names,
                           EncodedSink &sink) {
  const std::vector<int64_t> shape(reader.shape().begin(),
                                   reader.shape().end());
  const std::vector<int64_t> block = ds::resolvedBlock(shape, scheme.block);
  const size_t rank = shape.size();
  bool sliced = rank >= 2;
  for (size_t d = 0; d + 2 < rank && sliced; ++d)
    sliced = block[d] == 1;
  const std::vector<int64_t> scales = ds::scaleShape(shape, scheme.block);
  const bool unsignedStorage = ds::isUnsigned(scheme.storage);
  if (!sliced) {
    FailureOr<Tensor> t = reader.readAll();
    if (failed(t))
      return failure();
    ds::QuantizedTensor q = ds::quantize(t->f.data(), shape, scheme, options);
    if (failed(sink.add({names.values, ds::storageDType(scheme.storage),
                         ds::storageShape(shape, scheme.storage),
                         ds::encodeValues(q)})) ||
        failed(sink.add({names.scales, scaleDType, scales,
                         floatBytes(q.scales, scaleDType)})))
      return failure();
    if (!unsignedStorage)
      return success();
    return sink.add({names.zeroPoints, ds::DType::U8, scales, zeroBytes(q)});
  }
  FailureOr<size_t> valuesAt =
      sink.reserve(names.values, ds::storageDType(scheme.storage),
                   ds::storageShape(shape, scheme.storage));
  FailureOr<size_t> scalesAt = sink.reserve(names.scales, scaleDType, scales);
  FailureOr<size_t> zerosAt = size_t{0};
  if (unsignedStorage)
    zerosAt = sink.reserve(names.zeroPoints, ds::DType::U8, scales);
  if (failed(valuesAt) || failed(scalesAt) || failed(zerosAt))
    return failure();
  // A slice is rows of one matrix (the last two axes), starting at a block
  // row; the storage bytes are as many per row, the scales as many per
  // block row.
  const int64_t n = shape[rank - 2], k = shape[rank - 1];
  const int64_t blockRows = block[rank - 2];
  const int64_t scaleRows = scales[rank - 2], scaleCols = scales[rank - 1];
  const int64_t rowBytes =
      ds::storageShape({1, k}, scheme.storage).back() *
      static_cast<int64_t>(ds::dtypeSize(ds::storageDType(scheme.storage)));
  const ds::QScheme sliceScheme{scheme.storage,
                                {scheme.block[rank - 2], scheme.block.back()}};
  const size_t scaleSize = ds::dtypeSize(scaleDType);
  return reader.forEachSlice(
      n, blockRows,
      [&](int64_t first, int64_t count, const float *x) -> LogicalResult {
        ds::QuantizedTensor q =
            ds::quantize(x, {count, k}, sliceScheme, options);
        std::vector<uint8_t> bytes = ds::encodeValues(q);
        const int64_t matrix = first / n, row = first % n;
        const int64_t scaleAt =
            (matrix * scaleRows + row / blockRows) * scaleCols;
        std::vector<uint8_t> scaleBytes = floatBytes(q.scales, scaleDType);
        if (failed(sink.write(*valuesAt, first * rowBytes, bytes.data(),
                              bytes.size())) ||
            failed(sink.write(*scalesAt, scaleAt * scaleSize, scaleBytes.data(),
                              scaleBytes.size())))
          return failure();
        if (!unsignedStorage)
          return success();
        std::vector<uint8_t> zeros = zeroBytes(q);
        return sink.write(*zerosAt, scaleAt, zeros.data(), zeros.size());
      });
}

struct QuantizePass : public ds::impl::QuantizePassBase<QuantizePass> {
  using Base::Base;

  void runOnOperation() override;

private:
  LogicalResult parseScheme(Location loc);
  /// The quantized (or narrowed) replacement of `weight`, or a null value
  /// when the weight is left alone.
  FailureOr<Value> rewriteWeight(Operation *user, Value weight,
                                 WeightCategory c);
  std::optional<float> staticScale(Value weight);
  void quantizeActivations(Operation *op, Value weight,
                           std::optional<float> scale = std::nullopt);
  LogicalResult narrow(Operation *op, WeightCategory c);

  Scheme s;
  std::map<std::string, float> ranges;
  /// Lives for one runOnOperation.
  WeightRewriter *rw = nullptr;
};

LogicalResult QuantizePass::parseScheme(Location loc) {
  MLIRContext *ctx = &getContext();
  s = Scheme();
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
  } else if (scheme == "w4a8") {
    if (groupSize <= 0)
      return emitError(loc) << "ds-quantize: group-size must be positive, got "
                            << static_cast<int64_t>(groupSize.getValue());
    s.storage = b.getIntegerType(4);
    s.group = groupSize;
    s.actStorage = b.getI8Type();
  } else if (scheme == "fp8") {
    s.storage = b.getType<Float8E4M3FNType>();
    s.fp8Blocks = true;
    s.actStorage = b.getType<Float8E4M3FNType>();
    s.actGroup = 128;
  } else {
    return emitError(loc) << "ds-quantize: unknown scheme '" << scheme
                          << "' (int8, int4, w8a8, w4a8, fp8, bf16, f16)";
  }
  const bool int4 = scheme == "int4" || scheme == "w4a8";
  if (!scaleType.empty() && !int4)
    return emitError(loc)
           << "ds-quantize: scale-type applies to int4 and w4a8 only";
  if (!scaleType.empty() && scaleType != "f16" && scaleType != "f32")
    return emitError(loc) << "ds-quantize: unknown scale-type '" << scaleType
                          << "' (f16, f32)";
  s.halfScales = int4 && scaleType != "f32";
  if (zeroPoint && scheme != "int4")
    return emitError(loc) << "ds-quantize: zero-point applies to int4 only";
  if (!calibrationPath.empty() && scheme != "w8a8" && scheme != "w4a8")
    return emitError(loc) << "ds-quantize: calibration (static activation "
                             "scales) applies to w8a8 and w4a8 only";
  return success();
}

FailureOr<Value> QuantizePass::rewriteWeight(Operation *user, Value weight,
                                             WeightCategory c) {
  std::optional<WeightSources> sources = rw->select(user, weight, c);
  if (!sources)
    return Value();
  auto type = cast<RankedTensorType>(weight.getType());
  auto element = cast<FloatType>(type.getElementType());
  if (s.castType && element == s.castType)
    return Value();
  std::string base = stacklessName(sources->key());
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  if (s.castType) {
    bool bf16 = s.castType.isBF16();
    NewParamNames names{base + (bf16 ? ":bf16" : ":f16"), "", "", ""};
    const ds::DType dtype = bf16 ? ds::DType::BF16 : ds::DType::F16;
    auto encode = [=](const WeightReader &reader,
                      EncodedSink &sink) -> LogicalResult {
      // Element by element: any slices of rows.
      FailureOr<size_t> at = sink.reserve(names.values, dtype, shape);
      if (failed(at))
        return failure();
      return reader.forEachSlice(
          reader.rows(), 1, [&](int64_t first, int64_t count, const float *x) {
            std::vector<uint8_t> bytes =
                floatBytes(ArrayRef(x, count * reader.rowSize()), dtype);
            return sink.write(*at, first * reader.rowSize() * 2, bytes.data(),
                              bytes.size());
          });
    };
    return rw->materialize(user, weight, *sources, type.clone(s.castType),
                           names, encode);
  }
  SmallVector<int64_t> block(type.getRank(), 1);
  block.back() = s.group;
  if (s.fp8Blocks && type.getRank() >= 2) {
    block[type.getRank() - 1] = 128;
    block[type.getRank() - 2] = 128;
  }
  auto qtype = QTensorType::get(&getContext(), type.getShape(), s.storage,
                                element, block);
  ds::QScheme q = getQScheme(qtype);
  NewParamNames names{base + ":q", base + ":scale",
                      qtype.hasZeroPoint() ? base + ":zero" : "", ""};
  const bool halfScales = s.halfScales;
  auto encode = [=](const WeightReader &reader,
                    EncodedSink &sink) -> LogicalResult {
    ds::QuantizeOptions options;
    options.searchClip = clipSearch && (q.storage == ds::QStorage::I4 ||
                                        q.storage == ds::QStorage::U4);
    options.halfScales = halfScales;
    return quantizeInto(reader, q, options,
                        halfScales ? ds::DType::F16 : ds::DType::F32, names,
                        sink);
  };
  return rw->materialize(user, weight, *sources, qtype, names, encode);
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
  // An input that was all zeros during calibration: any scale represents
  // it; 0 would mean "dynamic".
  if (absmax == 0.0f)
    return 1.0f;
  return absmax / ds::qmax(*getQStorage(s.actStorage));
}

/// bf16/f16: runs `op` in the narrow type with its weights narrowed, the
/// norm prologue and the residual epilogue of a fused linear kept outside.
LogicalResult QuantizePass::narrow(Operation *op, WeightCategory c) {
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
  if (!rw->isTargeted(c))
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
        ActQuantAttr(), m.getExpertGridAttr(), m.getExpertGridAxesAttr(),
        m.getAllToAllAttr());
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
  // DeepSeek-V3 keeps its output head out of FP8: by default fp8 leaves it
  // alone. Every other scheme quantizes it (for int4 it is the largest GEMV
  // of a decode step; an f32 head moved 2x the bytes of every expert).
  SmallVector<std::string> defaults = {"linear", "experts"};
  if (scheme != "fp8")
    defaults.push_back("lm_head");
  WeightRewriter rewriter;
  rw = &rewriter;
  if (failed(rewriter.init(module, "ds-quantize", targets, defaults, exclude,
                           weightsPath, outputPath)))
    return signalPassFailure();
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
      // Finite in f32 (a static scale is absmax / qmax).
      if (!v || !(*v >= 0.0) || !(*v <= 3.0e38)) {
        emitError(loc) << "ds-quantize: " << calibrationPath
                       << ": bad range for '" << name.str() << "'";
        return signalPassFailure();
      }
      ranges[name.str()] = static_cast<float>(*v);
    }
  }

  // Activation schemes need the MoE block's steps to attach quantization to;
  // mixed precision keeps the router (inside ds.moe) in f32.
  if (s.actStorage || s.castType) {
    RewritePatternSet patterns(&getContext());
    populateDecomposeMoEPatterns(patterns);
    if (failed(applyPatternsGreedily(module, std::move(patterns))))
      return signalPassFailure();
  }

  SmallVector<Operation *> gemms;
  module.walk([&](Operation *op) {
    if (!getGemmWeights(op).empty())
      gemms.push_back(op);
  });
  for (Operation *op : gemms) {
    auto weights = getGemmWeights(op);
    WeightCategory first = weights.front().second;
    if (s.castType &&
        isa<LinearOp, FusedLinearOp, GroupedMatmulOp, FusedMoEOp>(op)) {
      if (failed(narrow(op, first)))
        return signalPassFailure();
      continue;
    }
    // Calibrated scales are looked up by the original weights' names.
    std::optional<float> scale;
    if (isa<LinearOp, FusedLinearOp>(op))
      scale = staticScale(weights.front().first->get());
    for (auto [operand, category] : weights) {
      FailureOr<Value> q = rewriteWeight(op, operand->get(), category);
      if (failed(q))
        return signalPassFailure();
      if (*q)
        operand->set(*q);
    }
    if (s.castType)
      continue;
    if (isa<LinearOp>(op) && first != WeightCategory::Router)
      quantizeActivations(op, weights.front().first->get(), scale);
    else if (isa<FusedLinearOp, GroupedMatmulOp>(op))
      quantizeActivations(op, weights.front().first->get(), scale);
    // Both MoE GEMMs take quantized inputs only when both weights are.
    else if (auto m = dyn_cast<FusedMoEOp>(op);
             m && isa<QTensorType>(m.getDown().getType()))
      quantizeActivations(op, m.getGateUp());
  }
  if (failed(rewriter.finish(module)))
    return signalPassFailure();
}

} // namespace
