//===- Interpreter.h - the ds reference interpreter --------------*- C++
//-*-===//
//
// Executes ds functions (and the upstream func/arith/tensor ops ds IR uses)
// on the CPU, op by op, in f32: values of f16/bf16 type are rounded to their
// type after every op, integers are i64. It is the oracle that passes,
// kernels and the importer are checked against, so it favours the obvious
// loop over speed. Errors (bad inputs, out-of-range ids or positions,
// missing weights, unsupported ops) are MLIR diagnostics at the op.
//
//===----------------------------------------------------------------------===//

#ifndef DS_INTERPRETER_INTERPRETER_H
#define DS_INTERPRETER_INTERPRETER_H

#include "ds/dialects/DS/IR/DSNamespace.h"
#include "ds/dialects/DS/IR/DSSharding.h"

#include "ds/support/HostTensor.h"
#include "ds/weights/Weights.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

#include <functional>
#include <memory>
#include <vector>

namespace ds {

class ProcessGrid;

/// Sees every routing decision: the routing op (ds.router, ds.fused_router
/// or ds.moe), the selected expert indices [N, top_k] and the expert count.
using RoutingObserver =
    std::function<void(Operation *op, const Tensor &indices, int64_t experts)>;
/// Imposes a routing: returns the expert indices [N, top_k] (numbering the
/// kept experts) a routing op must select, or null to let it choose. The
/// weights are still computed from its own scores. Error reports use it to
/// separate rounding error from changed routing decisions.
using RoutingOverride = std::function<const Tensor *(Operation *op)>;
/// Sees every value an op produces (after rounding to its type).
using ValueObserver = std::function<void(Value value, const Tensor &tensor)>;
/// Sees the input a GEMM (ds.linear, ds.fused_linear after its norm
/// prologue) multiplies with `weight`: the activation ranges calibration
/// collects.
using GemmInputObserver =
    std::function<void(Operation *op, Value weight, const Tensor &input)>;

class Interpreter {
public:
  /// `weights` may be null for modules without ds.param.
  Interpreter(ModuleOp module, WeightProvider *weights)
      : module(module), weights(weights) {}
  /// The module it runs.
  ModuleOp getModule() const { return module; }

  /// Runs the function `name` on `args` (checked against its signature) and
  /// returns its results (f32 for float types, i64 for integer types).
  FailureOr<std::vector<ds::HostTensor>> run(StringRef name,
                                             ArrayRef<ds::HostTensor> args);

  /// The same on interpreter values.
  ///
  /// A partitioned module (one with a `shard.grid`, from ds-partition) runs
  /// every process of its grid, each on a thread with its own block of the
  /// arguments and its own shard of the weights, the shard collectives
  /// emulated between them: arguments and results are the whole values
  /// (`wholeArgumentType`), split and reassembled as the functions'
  /// `ds.split_axes` attributes say, and a replicated result must come out
  /// the same on every process. Observers see nothing of such a run.
  FailureOr<SmallVector<Tensor>> call(StringRef name, ArrayRef<Tensor> args);

  /// Calibration hook: called after each routing decision.
  void setRoutingObserver(RoutingObserver observer) {
    routingObserver = std::move(observer);
  }
  const RoutingObserver &getRoutingObserver() const { return routingObserver; }
  void setRoutingOverride(RoutingOverride override) {
    routingOverride = std::move(override);
  }
  const RoutingOverride &getRoutingOverride() const { return routingOverride; }
  void setValueObserver(ValueObserver observer) {
    valueObserver = std::move(observer);
  }
  const ValueObserver &getValueObserver() const { return valueObserver; }
  void setGemmInputObserver(GemmInputObserver observer) {
    gemmInputObserver = std::move(observer);
  }
  const GemmInputObserver &getGemmInputObserver() const {
    return gemmInputObserver;
  }

  /// Holds each value only until its last use, and evaluates weights
  /// (ds.param ops and concatenations of them) just before their first
  /// use: with a streaming WeightProvider (CheckpointWeights::Caching::
  /// Stream), memory stays near the weights of one op plus the activations
  /// whatever the model's size, at the cost of converting every weight
  /// again at each call. Off by default (every value is kept until the
  /// function returns, in program order).
  void setBoundedMemory(bool on) { boundedMemory = on; }
  bool hasBoundedMemory() const { return boundedMemory; }

private:
  /// Every process of `grid` runs `fn`, or with `pipeline` its stage's
  /// function, on its block of `args`; the whole results come back.
  FailureOr<SmallVector<Tensor>>
  callPartitioned(func::FuncOp fn,
                  const std::optional<PipelineStages> &pipeline,
                  const ProcessGrid &grid, ArrayRef<Tensor> args);

  ModuleOp module;
  WeightProvider *weights;
  bool boundedMemory = false;
  RoutingObserver routingObserver;
  RoutingOverride routingOverride;
  ValueObserver valueObserver;
  GemmInputObserver gemmInputObserver;
};

} // namespace ds

#endif // DS_INTERPRETER_INTERPRETER_H
