//===- PipelineStages.h - a function cut into pipeline stages --*- C++ -*-===//
//
// Pipeline parallelism for ds-partition{pp}: a model function is cut into
// stages of consecutive layers (an attention op marks each layer), each a
// function of its own that receives the activations crossing into it and
// returns those crossing out; the tensor-, expert- and data-parallel
// partitioning then runs on every stage as on any function, and
// connectStages turns the crossings into shard.send / shard.recv over the
// pipeline axis and leaves a declaration of the whole function listing its
// stages (DSSharding.h).
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_UTILS_PIPELINESTAGES_H
#define DS_PASSES_UTILS_PIPELINESTAGES_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace ds {

/// A function cut into stages. Each stage's arguments are the whole
/// function's (its tokens, positions and the KV caches its layers update)
/// followed by the values it receives from the previous stage; its results
/// are the whole function's results it computes followed by the values it
/// hands to the next stage.
struct StagedFunction {
  std::string name;
  FunctionType type;
  ArrayAttr argAttrs, resultAttrs;
  LocationAttr loc;
  SmallVector<func::FuncOp> stages;
  /// Per stage, per argument: the whole function's argument, or -1 for a
  /// received value.
  SmallVector<SmallVector<int64_t>> argOrigin;
  /// Per stage, per result: the whole function's result, or -1 for a value
  /// handed on.
  SmallVector<SmallVector<int64_t>> resultOrigin;
};

/// Cuts `fn` into `stages` functions of about equal numbers of layers
/// (named `<fn>.stage<k>`, inserted after it) and erases `fn`. Weights,
/// constants and what is computed from the arguments alone are repeated in
/// every stage that uses them; every other value used past a cut crosses
/// it. Fails, at `fn`, when it has fewer layers than stages.
FailureOr<StagedFunction> splitIntoStages(func::FuncOp fn, int64_t stages);

/// After partitioning: each crossing becomes a shard.send at the end of the
/// stage computing it and a shard.recv at the start of the next, over grid
/// axis `axis` of `grid` (stage k is index k along it); the stages' whole
/// argument and result indices are recorded, and a declaration named as
/// the whole function, with its signature, lists the stages.
LogicalResult connectStages(StagedFunction &staged, FlatSymbolRefAttr grid,
                            int16_t axis);

} // namespace ds

#endif // DS_PASSES_UTILS_PIPELINESTAGES_H
