//===- KVCacheType.cpp - KV caches stored in bf16 / f16 -------------------===//
//
// ds-kv-cache-type: every function's cache arguments, the ds.cache_update
// results built on them and the function results returning those take the
// requested element type (setKVCacheType). Not a rewrite pattern: the
// change is one type propagated from an argument through its uses and into
// the function's signature, which either applies whole or not at all.
//
//===----------------------------------------------------------------------===//

#include "ds/passes/Passes.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"

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

LogicalResult ds::setKVCacheType(func::FuncOp fn, FloatType elt) {
  if (fn.isExternal())
    return success();
  Block &body = fn.getBody().front();
  // The values that hold a cache (arguments, then update results), each
  // retyped once everything is known to accept the new type.
  SmallVector<Value> values;
  llvm::SmallDenseSet<unsigned> results;
  for (BlockArgument arg : body.getArguments())
    if (isa<RankedTensorType>(arg.getType()) && isCacheArgument(arg))
      values.push_back(arg);
  for (size_t i = 0; i < values.size(); ++i)
    for (OpOperand &use : values[i].getUses()) {
      Operation *user = use.getOwner();
      if (auto update = dyn_cast<CacheUpdateOp>(user)) {
        if (use.get() != update.getCache())
          return update.emitError("a KV cache is the update of a "
                                  "ds.cache_update");
        values.push_back(update.getResult());
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
  for (Value v : values)
    v.setType(withElement(v.getType(), elt));
  SmallVector<Type> resultTypes(fn.getFunctionType().getResults());
  for (unsigned i : results)
    resultTypes[i] = withElement(resultTypes[i], elt);
  fn.setFunctionType(
      FunctionType::get(fn.getContext(), body.getArgumentTypes(), resultTypes));
  return success();
}

namespace {
struct KVCacheTypePass : public ds::impl::KVCacheTypePassBase<KVCacheTypePass> {
  using Base::Base;
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    FloatType elt = cacheType == "bf16"  ? FloatType(BFloat16Type::get(ctx))
                    : cacheType == "f16" ? FloatType(Float16Type::get(ctx))
                    : cacheType == "f32" ? FloatType(Float32Type::get(ctx))
                                         : FloatType();
    if (!elt) {
      getOperation()->emitError("ds-kv-cache-type: type must be bf16, f16 or "
                                "f32, got '")
          << cacheType << "'";
      return signalPassFailure();
    }
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (failed(setKVCacheType(fn, elt)))
        return signalPassFailure();
  }
};
} // namespace
