//===- Weights.h - model weights at compile time ----------------*- C++ -*-===//
//
// The weights library: a ds module's weights as f32 tensors, for every layer
// that needs their values before run time - the reference interpreter, the
// weight-rewriting passes (quantization, 2:4 sparsity, expert pruning) and
// CPU codegen's packing. It opens the checkpoint with the files a module
// lists in ds.weight_files, loads ds.param ops (expert stacking `*`,
// `select`, quantized and 2:4 params dequantized), and evaluates weight
// values built from params (tensor.concat / ds.concat_weights), with one
// concatenation for everyone.
//
//===----------------------------------------------------------------------===//

#ifndef DS_WEIGHTS_WEIGHTS_H
#define DS_WEIGHTS_WEIGHTS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"

#include <memory>
#include <string>
#include <vector>

namespace ds {
class ParamOp;
class QTensorType;
class Sparse24Type;

/// A tensor value: row-major f32 data (float tensors) or i64 data (integer
/// and index tensors and scalars). The interpreter's values and the
/// weights' evaluated form.
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
  /// Keep: every loaded param stays converted in memory (the interpreter
  /// reads each weight once per step). Stream: nothing is kept, so a pass
  /// or codegen that visits each weight once holds only the weights in use,
  /// not a converted copy of the whole checkpoint.
  enum class Caching { Keep, Stream };
  explicit CheckpointWeights(const ds::Checkpoint &checkpoint,
                             Caching caching = Caching::Keep)
      : checkpoint(checkpoint), caching(caching) {}
  FailureOr<Tensor> load(ParamOp op) override;

private:
  FailureOr<Tensor> loadUncached(ParamOp op);
  FailureOr<Tensor> loadQuantized(ParamOp op, QTensorType type);
  FailureOr<Tensor> loadSparse(ParamOp op, Sparse24Type type);

  const ds::Checkpoint &checkpoint;
  Caching caching;
  llvm::StringMap<Tensor> cache;
};

/// Opens the checkpoint `path` (directory or file) plus the files `module`
/// lists in its `ds.weight_files` attribute (quantized weights ds-quantize
/// wrote), or fails with a message.
FailureOr<std::unique_ptr<ds::Checkpoint>>
openModuleCheckpoint(ModuleOp module, const std::string &path,
                     std::string &error);

/// The storage dtype that models `type`'s precision (f16, bf16, FP8 e4m3,
/// else f32).
ds::DType storageDType(Type type);

/// The element type `v`'s f32 values model: a !ds.qtensor's expressed
/// type, a !ds.sparse24's element type, else the tensor's.
Type expressedElementType(Value v);
/// Rounds a float tensor to the precision of `v`'s element type (bf16, f16,
/// FP8; an e4m3 KV cache to e4m3 times its scale, getKVCacheScale); values
/// of !ds.qtensor type are kept as they are.
void roundToValueType(Tensor &t, Value v);

/// `parts` joined along `axis` (equal shapes elsewhere, not checked).
Tensor concatenate(ArrayRef<const Tensor *> parts, int64_t axis);
/// Copies `part` into `out` at `offset` along `axis` (out's extent there is
/// the sum of its parts'); false when part's shape does not fit there. A
/// caller can load, copy and free each part in turn.
bool concatenateInto(Tensor &out, const Tensor &part, int64_t axis,
                     int64_t offset);

/// The value of a weight at compile time: a ds.param, or a concatenation
/// (tensor.concat, ds.concat_weights) of such values, recursively. Anything
/// else is an error at its defining op (or a failure without a message for
/// a block argument, which the caller reports).
FailureOr<Tensor> evaluateWeight(Value weight, WeightProvider &weights);

} // namespace ds

#endif // DS_WEIGHTS_WEIGHTS_H
