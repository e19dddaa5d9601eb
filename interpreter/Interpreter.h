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

#include "ds/support/HostTensor.h"
#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

#include <functional>
#include <memory>
#include <vector>

namespace mlir::ds {
class ParamOp;

/// A value during interpretation: row-major f32 data (float tensors) or i64
/// data (integer and index tensors and scalars).
struct Tensor {
  SmallVector<int64_t> shape;
  std::vector<float> f;
  std::vector<int64_t> i;
  bool isInt = false;

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  static Tensor floats(ArrayRef<int64_t> shape) {
    Tensor t;
    t.shape.assign(shape.begin(), shape.end());
    t.f.assign(t.numElements(), 0.0f);
    return t;
  }
  static Tensor ints(ArrayRef<int64_t> shape) {
    Tensor t;
    t.shape.assign(shape.begin(), shape.end());
    t.isInt = true;
    t.i.assign(t.numElements(), 0);
    return t;
  }
};

/// Supplies the data of ds.param ops.
class WeightProvider {
public:
  virtual ~WeightProvider() = default;
  /// Loads `op`'s tensor (all experts of a stacked param) as f32, or emits an
  /// error at the op and fails.
  virtual FailureOr<Tensor> load(ParamOp op) = 0;
};

/// Weights from a safetensors checkpoint, converted to f32 once and cached.
class CheckpointWeights : public WeightProvider {
public:
  explicit CheckpointWeights(const ::ds::Checkpoint &checkpoint)
      : checkpoint(checkpoint) {}
  FailureOr<Tensor> load(ParamOp op) override;

private:
  const ::ds::Checkpoint &checkpoint;
  llvm::StringMap<Tensor> cache;
};

/// Sees every routing decision: the routing op (ds.router, ds.fused_router
/// or ds.moe), the selected expert indices [N, top_k] and the expert count.
using RoutingObserver =
    std::function<void(Operation *op, const Tensor &indices, int64_t experts)>;

class Interpreter {
public:
  /// `weights` may be null for modules without ds.param.
  Interpreter(ModuleOp module, WeightProvider *weights)
      : module(module), weights(weights) {}

  /// Runs the function `name` on `args` (checked against its signature) and
  /// returns its results (f32 for float types, i64 for integer types).
  FailureOr<std::vector<::ds::HostTensor>> run(StringRef name,
                                               ArrayRef<::ds::HostTensor> args);

  /// The same on interpreter values.
  FailureOr<SmallVector<Tensor>> call(StringRef name, ArrayRef<Tensor> args);

  /// Calibration hook: called after each routing decision.
  void setRoutingObserver(RoutingObserver observer) {
    routingObserver = std::move(observer);
  }
  const RoutingObserver &getRoutingObserver() const { return routingObserver; }

private:
  ModuleOp module;
  WeightProvider *weights;
  RoutingObserver routingObserver;
};

} // namespace mlir::ds

#endif // DS_INTERPRETER_INTERPRETER_H
