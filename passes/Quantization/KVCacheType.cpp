//===- KVCacheType.cpp - KV caches stored in bf16 / f16 / e4m3 ------------===//
//
// ds-kv-cache-type: every function's cache arguments, the ds.cache_update
// results built on them and the function results returning those take the
// requested element type (setKVCacheType); e4m3 caches get their scale on
// every op that writes or reads them. Not a rewrite pattern: the change is
// one type propagated from an argument through its uses and into the
// function's signature, which either applies whole or not at all.
//
//===----------------------------------------------------------------------===//

#include "ds/passes/Passes.h"
#include "ds/support/KVScale.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>

namespace ds {
#define GEN_PASS_DEF_KVCACHETYPEPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

RankedTensorType withElement(Type t, Type elt) {
  auto ranked = cast<RankedTensorType>(t);
  return RankedTensorType::get(ranked.getShape(), elt);
}

/// Whether `arg` is a KV cache: the cache operand of a ds.cache_update.
bool isCacheArgument(BlockArgument arg) {
  return llvm::any_of(arg.getUses(), [](OpOperand &use) {
    auto update = dyn_cast<CacheUpdateOp>(use.getOwner());
    return update && use.get() == update.getCache();
  });
}

} // namespace

LogicalResult ds::setKVCacheType(func::FuncOp fn, FloatType elt,
                                 function_ref<double(unsigned)> scaleOf) {
  if (fn.isExternal())
    return success();
  Block &body = fn.getBody().front();
  // The values that hold a cache (arguments, then update results), each
  // retyped once everything is known to accept the new type. Each carries
  // the index of its cache (its argument's place among the cache
  // arguments).
  SmallVector<Value> values;
  SmallVector<unsigned> cacheOf;
  llvm::SmallDenseSet<unsigned> results;
  for (BlockArgument arg : body.getArguments())
    if (isa<RankedTensorType>(arg.getType()) && isCacheArgument(arg)) {
      cacheOf.push_back(values.size());
      values.push_back(arg);
    }
  for (size_t i = 0; i < values.size(); ++i)
    for (OpOperand &use : values[i].getUses()) {
      Operation *user = use.getOwner();
      if (auto update = dyn_cast<CacheUpdateOp>(user)) {
        if (use.get() != update.getCache())
          return update.emitError("a KV cache is the update of a "
                                  "ds.cache_update");
        values.push_back(update.getResult());
        cacheOf.push_back(cacheOf[i]);
        continue;
      }
      if (isa<AttentionOp, MLAAttentionOp>(user))
        continue;
      if (auto ret = dyn_cast<func::ReturnOp>(user)) {
        results.insert(use.getOperandNumber());
        continue;
      }
      return user->emitError("cannot store this KV cache as ")
             << elt << ": it is read by '" << user->getName()
             << "', which reads caches of its activations' type only";
    }
  // Keys and values (latents and rope keys) share their type: an attention
  // reading a cache reads two.
  llvm::SmallPtrSet<Value, 16> held(values.begin(), values.end());
  for (Value v : values)
    for (Operation *user : v.getUsers()) {
      Value a, b;
      if (auto att = dyn_cast<AttentionOp>(user)) {
        a = att.getK();
        b = att.getV();
      } else if (auto mla = dyn_cast<MLAAttentionOp>(user)) {
        a = mla.getCKv();
        b = mla.getKPe();
      } else {
        continue;
      }
      if (!held.contains(a) || !held.contains(b))
        return user->emitError("reads a KV cache beside a value that is not "
                               "one: both must be caches to change their "
                               "type");
    }
  // An e4m3 cache's scale, on every op that writes or reads it; other types
  // have none.
  const bool e4m3 = isa<Float8E4M3FNType>(elt);
  llvm::DenseMap<Value, FloatAttr> scales;
  for (auto [v, cache] : llvm::zip(values, cacheOf))
    scales[v] = e4m3 ? FloatAttr::get(Float64Type::get(fn.getContext()),
                                      scaleOf ? scaleOf(cache) : 1.0)
                     : FloatAttr();
  for (Value v : values)
    v.setType(withElement(v.getType(), elt));
  for (Value v : values)
    for (Operation *user : v.getUsers()) {
      if (auto update = dyn_cast<CacheUpdateOp>(user))
        update.setKvScaleAttr(scales[update.getCache()]);
      else if (auto att = dyn_cast<AttentionOp>(user)) {
        att.setKScaleAttr(scales[att.getK()]);
        att.setVScaleAttr(scales[att.getV()]);
      } else if (auto mla = dyn_cast<MLAAttentionOp>(user)) {
        mla.setCKvScaleAttr(scales[mla.getCKv()]);
        mla.setKPeScaleAttr(scales[mla.getKPe()]);
      }
    }
  SmallVector<Type> resultTypes(fn.getFunctionType().getResults());
  for (unsigned i : results)
    resultTypes[i] = withElement(resultTypes[i], elt);
  fn.setFunctionType(
      FunctionType::get(fn.getContext(), body.getArgumentTypes(), resultTypes));
  return success();
}

double ds::kvCacheScaleFor(double absmax) {
  // The largest finite e4m3 is 448: the smallest power of two s with
  // absmax / s <= 448 stores every calibrated value without saturating.
  if (!(absmax > 0) || !std::isfinite(absmax))
    return 1.0;
  return std::exp2(std::ceil(std::log2(absmax / 448.0)));
}

namespace {

/// Per-cache absolute maxima from a calibration file (ds-run --calibrate):
/// "kv_caches": {"cache0": m, ...}.
FailureOr<std::vector<double>> readCacheRanges(Location loc, StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return emitError(loc) << "ds-kv-cache-type: cannot read calibration '"
                          << path << "': " << buffer.getError().message();
  llvm::Expected<llvm::json::Value> parsed =
      llvm::json::parse((*buffer)->getBuffer());
  if (!parsed)
    return emitError(loc) << "ds-kv-cache-type: " << path << ": "
                          << llvm::toString(parsed.takeError());
  const llvm::json::Object *root = parsed->getAsObject();
  const llvm::json::Object *caches =
      root ? root->getObject("kv_caches") : nullptr;
  if (!caches)
    return emitError(loc) << "ds-kv-cache-type: " << path
                          << " has no \"kv_caches\" object (write it with "
                             "ds-run --calibrate)";
  std::vector<double> ranges;
  for (unsigned i = 0;; ++i) {
    const llvm::json::Value *m = caches->get("cache" + std::to_string(i));
    if (!m)
      break;
    std::optional<double> value = m->getAsNumber();
    if (!value || *value < 0 || !std::isfinite(*value))
      return emitError(loc) << "ds-kv-cache-type: " << path << ": cache" << i
                            << " has no finite, non-negative range";
    ranges.push_back(*value);
  }
  return ranges;
}

struct KVCacheTypePass : public ds::impl::KVCacheTypePassBase<KVCacheTypePass> {
  using Base::Base;
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    Location loc = getOperation().getLoc();
    FloatType elt = cacheType == "bf16"  ? FloatType(BFloat16Type::get(ctx))
                    : cacheType == "f16" ? FloatType(Float16Type::get(ctx))
                    : cacheType == "f32" ? FloatType(Float32Type::get(ctx))
                    : cacheType == "f8e4m3"
                        ? FloatType(Float8E4M3FNType::get(ctx))
                        : FloatType();
    if (!elt) {
      emitError(loc) << "ds-kv-cache-type: type must be bf16, f16, f8e4m3 or "
                        "f32, got '"
                     << cacheType << "'";
      return signalPassFailure();
    }
    const bool e4m3 = isa<Float8E4M3FNType>(elt);
    if (!ds::isPowerOfTwoScale(scale)) {
      emitError(loc) << "ds-kv-cache-type: scale must be a positive power of "
                        "two, got "
                     << scale;
      return signalPassFailure();
    }
    if (!e4m3 && (scale != 1.0 || !calibrationPath.empty())) {
      emitError(loc) << "ds-kv-cache-type: scale and calibration are for "
                        "type=f8e4m3 only";
      return signalPassFailure();
    }
    std::vector<double> ranges;
    if (!calibrationPath.empty()) {
      FailureOr<std::vector<double>> read =
          readCacheRanges(loc, calibrationPath);
      if (failed(read))
        return signalPassFailure();
      ranges = std::move(*read);
    }
    std::optional<unsigned> missing;
    auto scaleOf = [&](unsigned cache) {
      if (calibrationPath.empty())
        return static_cast<double>(scale);
      if (cache >= ranges.size()) {
        missing = cache;
        return 1.0;
      }
      return kvCacheScaleFor(ranges[cache]);
    };
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      if (failed(setKVCacheType(fn, elt, scaleOf)))
        return signalPassFailure();
      if (missing) {
        fn.emitError("ds-kv-cache-type: ")
            << calibrationPath << " has no range for cache" << *missing
            << " (calibrated on another model?)";
        return signalPassFailure();
      }
    }
  }
};
} // namespace
