//===- ShardingInterfaceImpl.h - ds ops in MLIR's shard dialect --*- C++
//-*-===//
//
// Attaches `mlir::shard::ShardingInterface` to the ds ops (and to the arith
// elementwise ops ds IR uses on tensors), so that `sharding-propagation`
// and `shard-partition` run on ds IR: each op states its iteration space,
// which loops may be split (heads, output channels, the contraction of a
// row-parallel projection, an expert FFN's intermediate size) and how a
// split op becomes its per-process form (head counts divided, a sharded
// `ds.param`, a `shard.all_reduce` after a split contraction).
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_TRANSFORMS_SHARDINGINTERFACEIMPL_H
#define DS_DIALECTS_DS_TRANSFORMS_SHARDINGINTERFACEIMPL_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/IR/DialectRegistry.h"

namespace ds {
/// Registers the ds ops' sharding models, those of the arith elementwise
/// ops on tensors, and upstream's for the func and tensor ops (the registry
/// keeps one copy of each when upstream's registerAllExtensions adds them
/// too). `ds-partition` registers them itself.
void registerShardingInterfaceExternalModels(DialectRegistry &registry);
} // namespace ds

#endif // DS_DIALECTS_DS_TRANSFORMS_SHARDINGINTERFACEIMPL_H
