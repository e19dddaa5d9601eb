//===- DSOps.h - ds operations -----------------------------------*- C++
//-*-===//
//
// The operation classes of the ds dialect, generated from DSOps.td.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSOPS_H
#define DS_DIALECTS_DS_IR_DSOPS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "ds/dialects/DS/IR/DSAttrs.h"
#include "ds/dialects/DS/IR/DSDialect.h"

#define GET_OP_CLASSES
#include "ds/dialects/DS/IR/DSOps.h.inc"

namespace ds {
/// The name of a routing op (ds.router, ds.fused_router, ds.moe) in routing
/// profiles: its name location ("model.layers.3") when it has one, else
/// "moe.<n>" for the n-th routing op of its function. Prefill and decode,
/// and fused or unfused forms of one model, give the same names.
std::string getRoutingSiteName(Operation *op);

/// Where a weight operand comes from: one ds.param, or a tensor.concat of
/// ds.params along `axis` (what ds-fuse-horizontal builds).
struct WeightSources {
  SmallVector<ParamOp> params;
  int64_t axis = 0;
  /// A stable name for the whole weight: the params' names (with their
  /// `select` lists) joined by `+`.
  std::string key() const;
};
/// Whether ds.concat_weights can join `weights` (quantized or 2:4 weights
/// whose blocks do not straddle the inputs) along `axis`.
bool canConcatWeights(ValueRange weights, int64_t axis);

/// The sources of `weight`, or nothing when it is computed otherwise.
std::optional<WeightSources> getWeightSources(Value weight);

/// The scale of the e4m3 KV cache `v` is: the kv_scale of the
/// ds.cache_update that produced it or takes it as its cache, else the
/// scale of an attention reading it; nothing when no op says.
std::optional<double> getKVCacheScale(Value v);
} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSOPS_H
