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

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ds {
class ParamOp;
struct WeightSources;
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
  /// Reads sharded params (a partitioned module's, `ds.param ... sharded`)
  /// as process `rank`'s block of them; without a process they are an
  /// error. Each block is read whole once and kept (also when streaming).
  void setProcess(int64_t rank) { process = rank; }
  /// Rows [first, first + count) of a float param's value (its leading
  /// dimensions flattened: a row is the last dimension) into `dst`, read
  /// straight from the checkpoint (never cached): what a pass that streams
  /// over a weight larger than it should hold reads. Safe to call from
  /// several threads at once.
  LogicalResult readRows(ParamOp op, int64_t first, int64_t count, float *dst);

private:
  FailureOr<Tensor> loadUncached(ParamOp op);
  /// Elements [begin, end) of a float param's value, flattened.
  LogicalResult readElements(ParamOp op, int64_t begin, int64_t end,
                             float *dst);
  FailureOr<Tensor> loadQuantized(ParamOp op, QTensorType type);
  FailureOr<Tensor> loadSparse(ParamOp op, Sparse24Type type);

  /// Process `process`'s block of a sharded param (kept).
  FailureOr<const Tensor *> shard(ParamOp op);

  const ds::Checkpoint &checkpoint;
  Caching caching;
  llvm::StringMap<Tensor> cache;
  std::optional<int64_t> process;
  std::mutex shardsLock;
  llvm::StringMap<Tensor> shards;
};

/// A weight's values (f32, concatenated as the IR says), read a range of
/// rows at a time straight from the checkpoint, never whole: its leading
/// dimensions are flattened and a row is its last dimension. An encoder streams
/// over a weight larger than memory should hold (a real-width fused expert
/// stack is GBs in f32) slice by slice. read() is safe from several threads.
class WeightReader {
public:
  ArrayRef<int64_t> shape() const { return shape_; }
  /// Rows: the product of the leading dimensions (1 for rank 0 and 1).
  int64_t rows() const { return rows_; }
  /// Values per row: the last dimension (1 for rank 0).
  int64_t rowSize() const { return rowSize_; }
  /// Rows [first, first + count) into `dst` (count * rowSize() floats).
  LogicalResult read(int64_t first, int64_t count, float *dst) const;
  /// The whole weight.
  FailureOr<Tensor> readAll() const;
  /// Calls `fn(firstRow, rowCount, values)` for slices of the rows, in
  /// parallel: each slice lies within one group of `groupRows` rows (a
  /// matrix of a stack) and starts at a multiple of `align` rows within it,
  /// so a block layout over the last two dimensions can be encoded slice by
  /// slice. Slices are small enough that a small weight takes several (the
  /// numerics tests then see the slicing) and a large one is never read
  /// whole. Fails when a read or a call does.
  using SliceFn = std::function<LogicalResult(int64_t, int64_t, const float *)>;
  LogicalResult forEachSlice(int64_t groupRows, int64_t align,
                             const SliceFn &fn) const;

  /// `sources` (a ds.param or a concatenation of them, all float tensors
  /// of static shape) read from `loader`; both must outlive the reader.
  WeightReader(const WeightSources &sources, CheckpointWeights &loader);
  /// Whether a reader can read `sources` (float params of static shape,
  /// not quantized or 2:4 ones); read() fails with a message otherwise.
  static bool canRead(const WeightSources &sources);

private:
  /// Rows of part `p`, a range that does not cross its end.
  LogicalResult readPart(size_t p, int64_t first, int64_t count,
                         float *dst) const;

  const WeightSources &sources;
  CheckpointWeights &loader;
  SmallVector<int64_t> shape_;
  int64_t rows_ = 1, rowSize_ = 1;
  /// Each part's extent along the concatenation axis.
  SmallVector<int64_t> extents;
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
