//===- Weights.cpp - checkpoints, ds.param loading, weight evaluation -----===//

#include "ds/weights/Weights.h"
#include "ds/weights/ProcessGrid.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSQuant.h"

#include "ds/support/Quant.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include "llvm/Support/Parallel.h"

#include <algorithm>
#include <atomic>
#include <cstring>

using namespace mlir;
using namespace ds;
using ds::DType;

namespace {
int64_t product(ArrayRef<int64_t> shape, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to; ++i)
    n *= shape[i];
  return n;
}
/// Elements [first, first + count) of a float tensor as f32: f32 and bf16
/// (the dtypes of real checkpoints) in loops the compiler vectorizes, the
/// rest element by element. A real-width checkpoint has billions of them.
void convertToFloats(const ds::TensorView &view, int64_t first, int64_t count,
                     float *out) {
  const uint8_t *p = view.data + first * ds::dtypeSize(view.dtype);
  switch (view.dtype) {
  case DType::F32:
    std::memcpy(out, p, count * sizeof(float));
    return;
  case DType::BF16:
    for (int64_t i = 0; i < count; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
    return;
  default:
    for (int64_t i = 0; i < count; ++i)
      out[i] = view.floatAt(first + i);
  }
}
} // namespace

DType ds::storageDType(Type type) {
  if (type.isF16())
    return DType::F16;
  if (type.isBF16())
    return DType::BF16;
  if (isa<Float8E4M3FNType>(type))
    return DType::F8E4M3;
  return DType::F32;
}

Type ds::expressedElementType(Value v) {
  if (auto q = dyn_cast<QTensorType>(v.getType()))
    return q.getExpressedType();
  if (auto sp = dyn_cast<Sparse24Type>(v.getType()))
    return sp.getElementType();
  if (auto shaped = dyn_cast<ShapedType>(v.getType()))
    return shaped.getElementType();
  return v.getType();
}

void ds::roundToValueType(Tensor &t, Value v) {
  // (q - zero) * scale of a !ds.qtensor is kept exactly in f32, as a kernel
  // that scales its integer GEMM result in f32 computes.
  if (isa<QTensorType>(v.getType()))
    return;
  DType d = storageDType(expressedElementType(v));
  if (t.isInt || d == DType::F32)
    return;
  if (d == DType::F8E4M3) {
    // An e4m3 KV cache holds e4m3 * its scale (a power of two: exact).
    const float scale = static_cast<float>(getKVCacheScale(v).value_or(1.0));
    for (float &x : t.f)
      x = ds::roundToDType(x / scale, d) * scale;
    return;
  }
  for (float &x : t.f)
    x = ds::roundToDType(x, d);
}

bool ds::concatenateInto(Tensor &out, const Tensor &part, int64_t axis,
                         int64_t offset) {
  const int64_t total = out.shape[axis], size = part.shape[axis];
  const int64_t outer = product(out.shape, 0, axis);
  const int64_t inner = product(out.shape, axis + 1, out.shape.size());
  if (part.shape.size() != out.shape.size() || offset + size > total ||
      part.numElements() != outer * size * inner)
    return false;
  for (int64_t o = 0; o < outer; ++o)
    std::copy_n(&part.f[o * size * inner], size * inner,
                &out.f[(o * total + offset) * inner]);
  return true;
}

Tensor ds::concatenate(ArrayRef<const Tensor *> parts, int64_t axis) {
  SmallVector<int64_t> shape = parts[0]->shape;
  int64_t total = 0;
  for (const Tensor *t : parts)
    total += t->shape[axis];
  shape[axis] = total;
  Tensor out = Tensor::floats(shape);
  int64_t offset = 0;
  for (const Tensor *x : parts) {
    concatenateInto(out, *x, axis, offset);
    offset += x->shape[axis];
  }
  return out;
}

FailureOr<Tensor> ds::evaluateWeight(Value weight, WeightProvider &weights) {
  Operation *def = weight.getDefiningOp();
  if (auto p = dyn_cast_or_null<ParamOp>(def))
    return weights.load(p);
  int64_t axis = -1;
  if (auto c = dyn_cast_or_null<tensor::ConcatOp>(def))
    axis = c.getDim();
  else if (auto c = dyn_cast_or_null<ConcatWeightsOp>(def))
    axis = c.getAxis();
  if (axis < 0) {
    if (def)
      return def->emitError("this weight is needed at compile time, but it "
                            "is neither a ds.param nor a concatenation of "
                            "them");
    return failure();
  }
  SmallVector<Tensor> parts;
  for (Value in : def->getOperands()) {
    FailureOr<Tensor> t = evaluateWeight(in, weights);
    if (failed(t))
      return failure();
    parts.push_back(std::move(*t));
  }
  SmallVector<const Tensor *> ptrs;
  for (const Tensor &t : parts)
    ptrs.push_back(&t);
  return concatenate(ptrs, axis);
}

//===----------------------------------------------------------------------===//
// CheckpointWeights
//===----------------------------------------------------------------------===//

FailureOr<const Tensor *> CheckpointWeights::shard(ParamOp op) {
  if (!process)
    return op.emitError() << "weight '" << op.getName()
                          << "' is one process's shard: give the process "
                             "whose program this is";
  std::string key = op.getName().str();
  llvm::raw_string_ostream keyStream(key);
  keyStream << " " << op.getType() << " " << op.getSplitAxesAttr();
  if (std::optional<ArrayRef<int64_t>> select = op.getSelect())
    for (int64_t i : *select)
      key += "#" + std::to_string(i);
  std::lock_guard<std::mutex> lock(shardsLock);
  auto it = shards.find(key);
  if (it != shards.end())
    return &it->second;
  // Read uncached, only the block: the process's slices of a split leading
  // axis, run by run along the others.
  FailureOr<Tensor> t = loadShard(
      op, *process, [&](ParamOp whole) { return loadUncached(whole); },
      [&](ParamOp whole, int64_t begin, int64_t end, float *dst) {
        return readElements(whole, begin, end, dst);
      });
  if (failed(t))
    return failure();
  if (caching == Caching::Stream) {
    // Runs narrower than a page leave their pages mapped: the tensors read
    // are released whole, as a whole read would have left them.
    // (Every expert of a stacked param: the process's are among them.)
    if (!op.isStacked()) {
      if (const ds::TensorView *view = checkpoint.find(op.getName().str()))
        view->releasePages();
    } else {
      for (int64_t e = 0;; ++e) {
        const ds::TensorView *view = checkpoint.find(op.getExpertName(e));
        if (!view)
          break;
        view->releasePages();
      }
    }
  }
  return &(shards[key] = std::move(*t));
}

FailureOr<Tensor> CheckpointWeights::load(ParamOp op) {
  if (op.isSharded()) {
    FailureOr<const Tensor *> t = shard(op);
    if (failed(t))
      return failure();
    return **t;
  }
  if (caching == Caching::Stream)
    return loadUncached(op);
  std::string key = op.getName().str();
  llvm::raw_string_ostream keyStream(key);
  keyStream << " " << op.getType();
  // Bind the optional first: ranging over *op.getSelect() would dangle.
  if (std::optional<ArrayRef<int64_t>> select = op.getSelect())
    for (int64_t i : *select)
      key += "#" + std::to_string(i);
  auto it = cache.find(key);
  if (it != cache.end())
    return it->second;
  FailureOr<Tensor> t = loadUncached(op);
  if (succeeded(t))
    cache[key] = *t;
  return t;
}

FailureOr<Tensor> CheckpointWeights::loadUncached(ParamOp op) {
  if (auto sparse = dyn_cast<Sparse24Type>(op.getType()))
    return loadSparse(op, sparse);
  if (auto qtype = dyn_cast<QTensorType>(op.getType()))
    return loadQuantized(op, qtype);
  Tensor t = Tensor::floats(cast<RankedTensorType>(op.getType()).getShape());
  if (failed(readElements(op, 0, t.numElements(), t.f.data())))
    return failure();
  return t;
}

LogicalResult CheckpointWeights::readRows(ParamOp op, int64_t first,
                                          int64_t count, float *dst) {
  auto type = dyn_cast<RankedTensorType>(op.getType());
  if (!type || !type.hasStaticShape())
    return op.emitError() << "weight '" << op.getName()
                          << "' is not a float tensor of static shape";
  const int64_t rowSize = type.getRank() == 0 ? 1 : type.getShape().back();
  if (op.isSharded()) {
    FailureOr<const Tensor *> block = shard(op);
    if (failed(block))
      return failure();
    if (first < 0 ||
        (first + count) * rowSize > static_cast<int64_t>((*block)->f.size()))
      return op.emitError() << "rows [" << first << ", " << first + count
                            << ") are outside weight '" << op.getName() << "'";
    std::copy_n((*block)->f.data() + first * rowSize, count * rowSize, dst);
    return success();
  }
  return readElements(op, first * rowSize, (first + count) * rowSize, dst);
}

LogicalResult CheckpointWeights::readElements(ParamOp op, int64_t begin,
                                              int64_t end, float *dst) {
  auto type = cast<RankedTensorType>(op.getType());
  // The value is made of units, each contiguous in one checkpoint tensor:
  // an expert of a stacked param, a selected row (index of the first axis),
  // or the whole tensor.
  const bool stacked = op.isStacked();
  const bool selected = op.getSelect() && !stacked;
  SmallVector<int64_t> unitShape(type.getShape());
  if (stacked || selected)
    unitShape.erase(unitShape.begin());
  const int64_t unitSize = product(unitShape, 0, unitShape.size());
  const int64_t total = type.getNumElements();
  if (begin < 0 || end > total || begin > end)
    return op.emitError() << "elements [" << begin << ", " << end
                          << ") are outside weight '" << op.getName() << "'";
  // The checkpoint tensor behind unit `u` and where the unit starts in it.
  auto source =
      [&](int64_t u) -> FailureOr<std::pair<const ds::TensorView *, int64_t>> {
    std::string name =
        stacked ? op.getExpertName(op.getSourceIndex(u)) : op.getName().str();
    const ds::TensorView *view = checkpoint.find(name);
    if (!view)
      return op.emitError()
             << "weight '" << name << "' is not in the checkpoint";
    if (selected) {
      // Rows `select` of one tensor.
      if (view->shape.empty() ||
          ArrayRef<int64_t>(view->shape).drop_front() !=
              ArrayRef<int64_t>(unitShape) ||
          !ds::isFloatDType(view->dtype) ||
          (view->dtype == ds::DType::F8E4M3 &&
           !isa<Float8E4M3FNType>(type.getElementType())))
        return op.emitError() << "weight '" << op.getName()
                              << "' does not have the selected rows' shape";
      int64_t src = op.getSourceIndex(u);
      if (src >= view->shape[0])
        return op.emitError()
               << "select index " << src << " is outside '" << op.getName()
               << "' (" << view->shape[0] << " rows)";
      return std::make_pair(view, src * unitSize);
    }
    if (ArrayRef<int64_t>(view->shape) != ArrayRef<int64_t>(unitShape)) {
      InFlightDiagnostic diag = op.emitError() << "weight '" << name << "' in "
                                               << view->file << " has shape [";
      llvm::interleaveComma(view->shape, diag);
      diag << "], the IR expects [";
      llvm::interleaveComma(unitShape, diag);
      return diag << "]";
    }
    if (!ds::isFloatDType(view->dtype))
      return op.emitError() << "weight '" << name << "' has integer dtype "
                            << std::string(ds::dtypeName(view->dtype))
                            << "; quantized weights are !ds.qtensor params";
    if (view->dtype == ds::DType::F8E4M3 &&
        !isa<Float8E4M3FNType>(type.getElementType()))
      return op.emitError() << "weight '" << name
                            << "' is FP8 e4m3; read it as a !ds.qtensor with "
                               "its scales";
    return std::make_pair(view, int64_t{0});
  };
  const ds::DType dtype = storageDType(type.getElementType());
  for (int64_t x = begin; x < end;) {
    const int64_t u = unitSize == 0 ? 0 : x / unitSize;
    const int64_t within = x - u * unitSize;
    const int64_t run = std::min(end - x, unitSize - within);
    auto src = source(u);
    if (failed(src))
      return failure();
    const auto [view, at] = *src;
    float *out = dst + (x - begin);
    convertToFloats(*view, at + within, run, out);
    // The param's precision (a bf16 param over f32 checkpoint values).
    if (dtype != DType::F32)
      for (int64_t i = 0; i < run; ++i)
        out[i] = ds::roundToDType(out[i], dtype);
    if (caching == Caching::Stream)
      view->releasePages(at + within, run);
    x += run;
  }
  return success();
}

FailureOr<Tensor> CheckpointWeights::loadQuantized(ParamOp op,
                                                   QTensorType type) {
  ds::QScheme scheme = getQScheme(type);
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  std::vector<int64_t> slice = shape;
  SmallVector<int64_t> sources = {-1};
  if (op.isStacked()) {
    // Experts are quantized one by one: drop the expert axis.
    slice.erase(slice.begin());
    scheme.block.erase(scheme.block.begin());
    sources.clear();
    for (int64_t e = 0; e < shape[0]; ++e)
      sources.push_back(op.getSourceIndex(e));
  }
  std::vector<int64_t> scales = ds::scaleShape(slice, scheme.block);
  // Finds `pattern` (expert `src`) with the expected dtype and shape;
  // `alsoAs`: dtypes that hold the same values as `dtype` (scales are f32
  // values, stored as f32, f16 (ds-quantize's int4, GPTQ / AWQ checkpoints)
  // or bf16).
  auto find = [&](StringRef pattern, int64_t src, ds::DType dtype,
                  const std::vector<int64_t> &want, StringRef what,
                  ArrayRef<ds::DType> alsoAs = {})
      -> FailureOr<const ds::TensorView *> {
    std::string name =
        src < 0 ? pattern.str() : ParamOp::expertName(pattern, src);
    const ds::TensorView *view = checkpoint.find(name);
    if (!view)
      return op.emitError()
             << what << " '" << name << "' is not in the checkpoint";
    if ((view->dtype != dtype && !llvm::is_contained(alsoAs, view->dtype)) ||
        view->shape != want) {
      InFlightDiagnostic diag =
          op.emitError() << what << " '" << name << "' in " << view->file
                         << " is " << std::string(ds::dtypeName(view->dtype))
                         << " [";
      llvm::interleaveComma(view->shape, diag);
      diag << "], the IR expects " << std::string(ds::dtypeName(dtype)) << " [";
      llvm::interleaveComma(want, diag);
      return diag << "]";
    }
    return view;
  };
  Tensor t = Tensor::floats(type.getShape());
  int64_t sliceSize = product(slice, 0, slice.size());
  for (auto [i, src] : llvm::enumerate(sources)) {
    auto values = find(op.getName(), src, ds::storageDType(scheme.storage),
                       ds::storageShape(slice, scheme.storage), "weight");
    auto scaleView = find(*op.getScales(), src, ds::DType::F32, scales,
                          "scales", {ds::DType::F16, ds::DType::BF16});
    if (failed(values) || failed(scaleView))
      return failure();
    ds::QuantizedTensor q;
    q.shape = slice;
    q.scheme = scheme;
    q.values = ds::decodeValues((*values)->data, slice, scheme.storage);
    for (int64_t j = 0; j < (*scaleView)->numElements(); ++j)
      q.scales.push_back((*scaleView)->floatAt(j));
    if (std::optional<StringRef> zp = op.getZeroPoints()) {
      auto zeroView = find(*zp, src, ds::DType::U8, scales, "zero_points");
      if (failed(zeroView))
        return failure();
      for (int64_t j = 0; j < (*zeroView)->numElements(); ++j)
        q.zeros.push_back(static_cast<float>((*zeroView)->intAt(j)));
    }
    std::vector<float> deq = ds::dequantize(q);
    std::copy(deq.begin(), deq.end(), t.f.begin() + i * sliceSize);
  }
  roundToValueType(t, op.getResult());
  return t;
}

FailureOr<Tensor> CheckpointWeights::loadSparse(ParamOp op, Sparse24Type type) {
  std::vector<int64_t> shape(type.getShape().begin(), type.getShape().end());
  std::vector<int64_t> slice = shape;
  SmallVector<int64_t> sources = {-1};
  if (op.isStacked()) {
    slice.erase(slice.begin());
    sources.clear();
    for (int64_t e = 0; e < shape[0]; ++e)
      sources.push_back(op.getSourceIndex(e));
  }
  int64_t k = slice.back();
  int64_t rows = product(slice, 0, slice.size()) / k;
  std::vector<int64_t> valuesShape = slice, metaShape = slice;
  valuesShape.back() = k / 2;
  metaShape.back() = (k / 4 + 1) / 2;
  ds::DType valueType = storageDType(type.getElementType());
  Tensor t = Tensor::floats(type.getShape());
  for (auto [i, src] : llvm::enumerate(sources)) {
    const ds::TensorView *views[2];
    for (auto [j, pattern, dtype, want, what] :
         {std::tuple<int, StringRef, ds::DType, std::vector<int64_t> *,
                     StringRef>{0, op.getName(), valueType, &valuesShape,
                                "values"},
          {1, *op.getMeta(), ds::DType::U8, &metaShape, "meta"}}) {
      std::string name =
          src < 0 ? pattern.str() : ParamOp::expertName(pattern, src);
      const ds::TensorView *view = checkpoint.find(name);
      if (!view)
        return op.emitError() << "2:4 " << what << " '" << name
                              << "' is not in the checkpoint";
      if (view->dtype != dtype || view->shape != *want)
        return op.emitError()
               << "2:4 " << what << " '" << name << "' in " << view->file
               << " is " << std::string(ds::dtypeName(view->dtype)) << " with "
               << view->numElements() << " elements, the IR "
               << "expects " << std::string(ds::dtypeName(dtype)) << " "
               << product(*want, 0, want->size());
      views[j] = view;
    }
    std::vector<float> values(views[0]->numElements());
    for (size_t j = 0; j < values.size(); ++j)
      values[j] = views[0]->floatAt(j);
    std::vector<float> dense =
        ds::decompress24(values.data(), views[1]->data, rows, k);
    std::copy(dense.begin(), dense.end(), t.f.begin() + i * rows * k);
  }
  roundToValueType(t, op.getResult());
  return t;
}

FailureOr<std::unique_ptr<ds::Checkpoint>>
ds::openModuleCheckpoint(ModuleOp module, const std::string &path,
                         std::string &error) {
  auto files = module->getAttrOfType<ArrayAttr>("ds.weight_files");
  if (path.empty()) {
    // No checkpoint: fine for a module without weights, or whose weights
    // all come from its ds.weight_files.
    bool params = false;
    module.walk([&](ParamOp) { params = true; });
    if (params && !files) {
      error = "the module's ds.param weights need a checkpoint (a model "
              "directory or .safetensors file; --weights)";
      return failure();
    }
  }
  absl::StatusOr<std::unique_ptr<ds::Checkpoint>> c =
      path.empty() ? ds::Checkpoint::empty() : ds::Checkpoint::open(path);
  if (!c.ok()) {
    error = std::string(c.status().message());
    return failure();
  }
  if (files) {
    for (Attribute f : files) {
      auto file = dyn_cast<StringAttr>(f);
      if (!file) {
        error = "ds.weight_files must list file names";
        return failure();
      }
      if (absl::Status st = (*c)->addFile(file.str()); !st.ok()) {
        error = std::string(st.message());
        return failure();
      }
    }
  }
  return std::move(*c);
}

//===----------------------------------------------------------------------===//
// WeightReader
//===----------------------------------------------------------------------===//

bool WeightReader::canRead(const WeightSources &sources) {
  return !sources.params.empty() &&
         llvm::all_of(sources.params, [&](ParamOp p) {
           auto t = dyn_cast<RankedTensorType>(p.getType());
           return t && t.hasStaticShape() &&
                  isa<FloatType>(t.getElementType()) &&
                  (sources.params.size() == 1 || sources.axis < t.getRank());
         });
}

WeightReader::WeightReader(const WeightSources &sources,
                           CheckpointWeights &loader)
    : sources(sources), loader(loader) {
  if (!canRead(sources)) {
    rows_ = -1; // read() reports it
    return;
  }
  for (ParamOp p : sources.params) {
    auto t = cast<RankedTensorType>(p.getType());
    if (shape_.empty())
      shape_.assign(t.getShape().begin(), t.getShape().end());
    else
      shape_[sources.axis] += t.getDimSize(sources.axis);
    extents.push_back(sources.params.size() > 1 ? t.getDimSize(sources.axis)
                                                : 0);
  }
  rowSize_ = shape_.empty() ? 1 : shape_.back();
  for (size_t d = 0; d + 1 < shape_.size(); ++d)
    rows_ *= shape_[d];
}

LogicalResult WeightReader::readPart(size_t p, int64_t first, int64_t count,
                                     float *dst) const {
  return loader.readRows(sources.params[p], first, count, dst);
}

LogicalResult WeightReader::read(int64_t first, int64_t count,
                                 float *dst) const {
  ParamOp front = sources.params.front();
  if (rows_ < 0)
    return front.emitError("a weight read row by row must be float params "
                           "of static shape, or a concatenation of them");
  if (first < 0 || count < 0 || first + count > rows_)
    return front.emitError()
           << "rows [" << first << ", " << first + count
           << ") are outside the weight (" << rows_ << " rows)";
  if (sources.params.size() == 1)
    return readPart(0, first, count, dst);
  const int64_t rank = static_cast<int64_t>(shape_.size());
  const int64_t axis = sources.axis;
  if (axis == rank - 1) {
    // Joined along the rows: each part fills its columns of every row.
    int64_t column = 0;
    std::vector<float> part;
    for (size_t p = 0; p < extents.size(); ++p) {
      part.resize(count * extents[p]);
      if (failed(readPart(p, first, count, part.data())))
        return failure();
      for (int64_t r = 0; r < count; ++r)
        std::copy_n(&part[r * extents[p]], extents[p],
                    dst + r * rowSize_ + column);
      column += extents[p];
    }
    return success();
  }
  // Joined along a leading axis: runs of whole rows, each from one part.
  int64_t below = 1; // rows per index of the axis
  for (int64_t d = axis + 1; d + 1 < rank; ++d)
    below *= shape_[d];
  const int64_t extent = shape_[axis];
  for (int64_t r = first, end = first + count; r < end;) {
    const int64_t outer = r / (extent * below);
    const int64_t index = (r / below) % extent, inner = r % below;
    size_t p = 0;
    int64_t offset = 0;
    while (index >= offset + extents[p])
      offset += extents[p++];
    const int64_t partRow =
        (outer * extents[p] + (index - offset)) * below + inner;
    const int64_t run =
        std::min(end - r, (offset + extents[p] - index) * below - inner);
    if (failed(readPart(p, partRow, run, dst + (r - first) * rowSize_)))
      return failure();
    r += run;
  }
  return success();
}

FailureOr<Tensor> WeightReader::readAll() const {
  Tensor t = Tensor::floats(shape_);
  if (failed(read(0, std::max<int64_t>(rows_, 0), t.f.data())))
    return failure();
  return t;
}

LogicalResult WeightReader::forEachSlice(int64_t groupRows, int64_t align,
                                         const SliceFn &fn) const {
  if (rows_ < 0)
    return read(0, 0, nullptr);
  if (groupRows <= 0 || rows_ % groupRows != 0 || align <= 0)
    return ParamOp(sources.params.front()).emitError()
           << "cannot slice a weight of " << rows_ << " rows in groups of "
           << groupRows;
  // 16K values at least (several slices for the tiny test models' stacks),
  // 1M at most (4 MB of f32 per slice in flight on each thread).
  const int64_t total = rows_ * rowSize_;
  const int64_t target =
      std::clamp<int64_t>(total / 64, int64_t{1} << 14, int64_t{1} << 20);
  int64_t rowsPer =
      std::max<int64_t>(1, target / std::max<int64_t>(rowSize_, 1));
  rowsPer = std::max(align, rowsPer / align * align);
  const int64_t perGroup = (groupRows + rowsPer - 1) / rowsPer;
  const int64_t slices = rows_ / groupRows * perGroup;
  std::atomic<bool> ok{true};
  llvm::parallelFor(0, slices, [&](size_t i) {
    if (!ok)
      return;
    const int64_t group = static_cast<int64_t>(i) / perGroup;
    const int64_t within = static_cast<int64_t>(i) % perGroup * rowsPer;
    const int64_t first = group * groupRows + within;
    const int64_t count = std::min(rowsPer, groupRows - within);
    std::vector<float> values(count * rowSize_);
    if (failed(read(first, count, values.data())) ||
        failed(fn(first, count, values.data())))
      ok = false;
  });
  return success(ok.load());
}
