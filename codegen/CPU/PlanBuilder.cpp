//===- PlanBuilder.cpp - ds functions to runtime execution plans ----------===//

#include "ds/codegen/CPU/PlanBuilder.h"
#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSQuant.h"
#include "ds/dialects/DS/IR/DSSharding.h"
#include "ds/rt/Kernels.h"
#include "ds/weights/ProcessGrid.h"
#include "ds/weights/Weights.h"

#include "ds/support/FileSpool.h"
#include "ds/support/Progress.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cstring>
#include <string_view>
#include <unordered_map>

using namespace mlir;
using namespace ds;
namespace rt = ds::rt;

namespace {

using Dims = std::vector<rt::DimExpr>;

rt::DimExpr product(const rt::DimExpr &a, const rt::DimExpr &b) {
  rt::DimExpr d = a;
  d.constant *= b.constant;
  d.factors.insert(d.factors.end(), b.factors.begin(), b.factors.end());
  return d;
}

/// Shared across the functions of a module: weights are loaded and packed
/// once, whichever function uses them first.
class WeightTable {
public:
  WeightTable(const ds::Checkpoint &checkpoint)
      : provider(checkpoint, CheckpointWeights::Caching::Stream),
        checkpoint(checkpoint) {
    absl::StatusOr<ds::FileSpool> s = ds::FileSpool::create();
    if (s.ok())
      data = std::move(*s);
    else
      spoolError = s.status();
  }

  /// Row-major f32 copy of a weight operand (index into the table).
  FailureOr<int32_t> raw(Value v) {
    auto key = std::make_pair(v.getAsOpaquePointer(), 0);
    if (auto it = ids.find(key); it != ids.end())
      return it->second;
    rt::WeightInfo info;
    info.name = name(v);
    info.layout = rt::WeightLayout::Raw;
    // A large float weight (an embedding table: Mixtral's is 0.5 GB in f32)
    // is read and written a slice of rows at a time, and stored once per
    // source; small ones whole, shared with any entry of equal bytes (the
    // norms' weights are often all equal).
    constexpr int64_t kStreamElements = int64_t{1} << 20;
    std::optional<WeightSources> sources = getWeightSources(v);
    RankedTensorType shaped = getLogicalTensorType(v.getType());
    std::string source = weightKey(v);
    if (shaped && shaped.hasStaticShape() &&
        shaped.getNumElements() > kStreamElements && sources &&
        !source.empty() && WeightReader::canRead(*sources)) {
      source += "#raw";
      if (auto it = bySource.find(source); it != bySource.end())
        return ids[key] = it->second;
      info.shape.assign(shaped.getShape().begin(), shaped.getShape().end());
      WeightReader reader(*sources, provider);
      const int64_t rowsPer = std::max<int64_t>(
          1, kStreamElements / std::max<int64_t>(1, reader.rowSize()));
      std::vector<float> values(rowsPer * reader.rowSize());
      PackedAppender out(*this);
      for (int64_t r = 0; r < reader.rows(); r += rowsPer) {
        const int64_t count = std::min(rowsPer, reader.rows() - r);
        if (failed(reader.read(r, count, values.data())))
          return failure();
        out.append(reinterpret_cast<const char *>(values.data()),
                   count * reader.rowSize() * sizeof(float));
      }
      FailureOr<int32_t> id = out.finish(std::move(info));
      if (failed(id))
        return v.getDefiningOp()->emitError(
                   "cannot write the weights section: ")
               << out.error();
      bySource[source] = *id;
      return ids[key] = *id;
    }
    FailureOr<Tensor> t = evaluate(v);
    if (failed(t))
      return failure();
    info.shape.assign(t->shape.begin(), t->shape.end());
    int32_t id = add(info, t->f.data(), t->f.size() * sizeof(float));
    ids[key] = id;
    return id;
  }

  /// A GEMM weight ([N, K], or [E, N, K] for experts) in packed layout.
  /// With `w8a8`, an int8 per-row weight (WeightFormat::I8Dot) or an int4
  /// one with f16 K-group scales (I4Dot, groups of a multiple of 8 that
  /// divide K) is packed for the integer dot product with int8 activations;
  /// `packedW8A8` tells whether that happened.
  FailureOr<int32_t> packed(Value v, Operation *user, bool w8a8 = false,
                            bool *packedW8A8 = nullptr) {
    if (packedW8A8)
      *packedW8A8 = false;
    auto key = std::make_pair(v.getAsOpaquePointer(), w8a8 ? 3 : 1);
    if (auto it = ids.find(key); it != ids.end()) {
      if (packedW8A8)
        *packedW8A8 =
            infos[it->second].layout == rt::WeightLayout::PackedI8Dot ||
            infos[it->second].layout == rt::WeightLayout::PackedI4Dot;
      return it->second;
    }
    RankedTensorType shaped = getLogicalTensorType(v.getType());
    if (!shaped || (shaped.getRank() != 2 && shaped.getRank() != 3))
      return user->emitError("the CPU backend needs a [N, K] or [E, N, K] "
                             "GEMM weight");
    // The functions of a module have their own ds.param ops for the same
    // checkpoint tensors: a weight made of the same params is packed once.
    std::string source = weightKey(v);
    if (!source.empty()) {
      source += w8a8 ? "#w8a8" : "";
      if (auto it = bySource.find(source); it != bySource.end()) {
        ids[key] = it->second;
        if (packedW8A8)
          *packedW8A8 =
              infos[it->second].layout == rt::WeightLayout::PackedI8Dot ||
              infos[it->second].layout == rt::WeightLayout::PackedI4Dot;
        return it->second;
      }
    }
    int64_t experts = shaped.getRank() == 3 ? shaped.getDimSize(0) : 1;
    int64_t n = shaped.getDimSize(shaped.getRank() - 2);
    int64_t k = shaped.getDimSize(shaped.getRank() - 1);
    rt::WeightInfo info;
    info.name = name(v);
    info.shape.assign(shaped.getShape().begin(), shaped.getShape().end());
    // Which packing applies is decided without packing; then the weight is
    // packed expert by expert straight into the weights section, so that
    // neither its values nor its packed bytes are ever whole in memory (a
    // real-width expert stack is GBs).
    PackedAppender out(*this);
    auto appendExpert = [&](const char *bytes, size_t size) {
      out.append(bytes, size);
    };
    ExpertSink sink = appendExpert;
    if (w8a8 && succeeded(packInt8(v, experts, n, k, nullptr, true))) {
      info.layout = rt::WeightLayout::PackedI8Dot;
      if (packedW8A8)
        *packedW8A8 = true;
      (void)packInt8(v, experts, n, k, &sink, true);
    } else if (w8a8 &&
               succeeded(packGrouped(v, experts, n, k, nullptr, info, true))) {
      if (packedW8A8)
        *packedW8A8 = true;
      (void)packGrouped(v, experts, n, k, &sink, info, true);
    } else if (succeeded(packInt8(v, experts, n, k, nullptr))) {
      info.layout = rt::WeightLayout::PackedI8;
      (void)packInt8(v, experts, n, k, &sink);
    } else if (succeeded(packGrouped(v, experts, n, k, nullptr, info))) {
      // int4 / FP8 stay narrow; info.layout and group set.
      (void)packGrouped(v, experts, n, k, &sink, info);
    } else {
      // The f32 value, packed per expert: bf16 / f16 weights
      // (ds-quantize{quantize=bf16|f16}) stay 2 bytes wide, 2:4 weights
      // (ds-sparsify-24) stay compressed (the kernel picks the activations
      // each kept weight needs), anything else is f32.
      Type elt = getElementTypeOrSelf(v.getType());
      auto format = rt::kernels::WeightFormat::F32;
      auto pack = rt::kernels::packWeightF32;
      info.layout = rt::WeightLayout::PackedF32;
      if (elt.isBF16()) {
        format = rt::kernels::WeightFormat::BF16;
        pack = rt::kernels::packWeightBF16;
        info.layout = rt::WeightLayout::PackedBF16;
      } else if (elt.isF16()) {
        format = rt::kernels::WeightFormat::F16;
        pack = rt::kernels::packWeightF16;
        info.layout = rt::WeightLayout::PackedF16;
      } else if (isSparse24(v) && k % 4 == 0) {
        format = rt::kernels::WeightFormat::S24;
        pack = rt::kernels::packWeightS24;
        info.layout = rt::WeightLayout::PackedS24;
      }
      // Float params (and concats of them) are read an expert at a time;
      // anything else (dequantized, decompressed) is evaluated whole.
      std::optional<WeightSources> sources = getWeightSources(v);
      const bool floats = sources && WeightReader::canRead(*sources);
      std::optional<WeightReader> reader;
      FailureOr<Tensor> whole = Tensor();
      if (floats)
        reader.emplace(*sources, provider);
      else
        whole = evaluate(v);
      if (failed(whole))
        return failure();
      std::string bytes(perExpert(format, n, k), '\0');
      std::vector<float> values(reader ? n * k : 0);
      for (int64_t e = 0; e < experts; ++e) {
        const float *x = whole->f.data() + e * n * k;
        if (reader) {
          if (failed(reader->read(e * n, n, values.data())))
            return failure();
          x = values.data();
        }
        pack(x, n, k, bytes.data());
        sink(bytes.data(), bytes.size());
      }
    }
    FailureOr<int32_t> id = out.finish(std::move(info));
    if (failed(id))
      return user->emitError("cannot write the weights section: ")
             << out.error();
    ids[key] = *id;
    if (!source.empty())
      bySource[source] = *id;
    return *id;
  }

  /// MLA's per-head projections from kv_b ([H * (dn + dv), rank]), packed
  /// for the GEMM: W_uk transposed ([H, rank, dn]) and W_uv ([H, dv, rank]).
  /// An int8 kv_b with per-row scales stays int8: W_uv keeps its rows'
  /// scales; W_ukᵀ's rows are kv_b's columns, so kv_b's row scales become
  /// per-K factors [H, dn] (`kScales`) that the kernel multiplies into the
  /// queries before the GEMM.
  struct MLAWeights {
    int32_t ukT = -1, uv = -1, kScales = -1;
  };
  FailureOr<MLAWeights> mlaProjections(Value kvB, int64_t heads, int64_t dn,
                                       int64_t dv) {
    // Once per set of params (@prefill and @decode have their own), as
    // packed() does; by value when kv_b is not made of params.
    std::string key = weightKey(kvB);
    if (key.empty())
      key =
          std::to_string(reinterpret_cast<uintptr_t>(kvB.getAsOpaquePointer()));
    if (auto it = mlaIds.find(key); it != mlaIds.end())
      return it->second;
    MLAWeights out;
    if (succeeded(mlaInt8(kvB, heads, dn, dv, out)) ||
        succeeded(mlaF8(kvB, heads, dn, dv, out))) {
      mlaIds[key] = out;
      return out;
    }
    FailureOr<Tensor> t = evaluate(kvB);
    if (failed(t))
      return failure();
    int64_t rank = t->shape[1];
    if (t->shape[0] != heads * (dn + dv))
      return kvB.getDefiningOp()->emitError("kv_b has ")
             << t->shape[0] << " rows, MLA needs " << heads * (dn + dv);
    auto add3 = [&](StringRef suffix, int64_t n, int64_t k, auto element) {
      std::vector<float> w(n * k);
      return addPerHead(kvB, suffix, rt::WeightLayout::PackedF32,
                        perExpert(rt::kernels::WeightFormat::F32, n, k), heads,
                        n, k, 0, [&](int64_t h, char *dst) {
                          for (int64_t r = 0; r < n; ++r)
                            for (int64_t c = 0; c < k; ++c)
                              w[r * k + c] = element(h, r, c);
                          rt::kernels::packWeightF32(w.data(), n, k, dst);
                        });
    };
    const float *kv = t->f.data();
    out.ukT = add3(":uk_t", rank, dn, [&](int64_t h, int64_t r, int64_t i) {
      return kv[(h * (dn + dv) + i) * rank + r];
    });
    out.uv = add3(":uv", dv, rank, [&](int64_t h, int64_t c, int64_t r) {
      return kv[(h * (dn + dv) + dn + c) * rank + r];
    });
    mlaIds[key] = out;
    return out;
  }

  std::vector<rt::WeightInfo> infos;
  /// The weights section, spooled to a temporary file as it is made: the
  /// compiler holds one weight at a time, not the model.
  ds::FileSpool data;
  absl::Status spoolError = absl::OkStatus();

private:
  /// Receives a packed GEMM weight expert by expert, in order.
  using ExpertSink = llvm::function_ref<void(const char *, size_t)>;

  /// Appends one weight's experts to the weights section as they are
  /// packed (each expert's bytes are a multiple of 64, so they follow one
  /// another), then records the entry.
  class PackedAppender {
  public:
    explicit PackedAppender(WeightTable &table) : table(table) {}
    void append(const char *bytes, size_t size) {
      absl::StatusOr<uint64_t> at =
          table.data.append(bytes, size, count == 0 ? 64 : 1);
      if (!at.ok()) {
        status = at.status();
        return;
      }
      if (count++ == 0)
        offset = *at;
      else if (*at != offset + total)
        status = absl::InternalError("a packed expert is not contiguous");
      total += size;
    }
    FailureOr<int32_t> finish(rt::WeightInfo info) {
      if (!status.ok())
        return failure();
      info.offset = offset;
      info.bytes = total;
      table.infos.push_back(std::move(info));
      return static_cast<int32_t>(table.infos.size() - 1);
    }
    std::string error() const { return std::string(status.message()); }

  private:
    WeightTable &table;
    uint64_t offset = 0, total = 0;
    int64_t count = 0;
    absl::Status status = absl::OkStatus();
  };

  /// What a weight is made of, as text: its ds.param ops (attributes and
  /// types) and the concatenations over them; empty when anything else.
  /// Equal keys mean equal values.
  static std::string weightKey(Value v) {
    Operation *def = v.getDefiningOp();
    if (!def || !isa<ParamOp, ConcatWeightsOp, tensor::ConcatOp>(def))
      return "";
    std::string key;
    llvm::raw_string_ostream os(key);
    os << def->getName() << def->getAttrDictionary() << v.getType() << "(";
    for (Value in : def->getOperands()) {
      std::string part = weightKey(in);
      if (part.empty())
        return "";
      os << part << ";";
    }
    os << ")";
    return key;
  }

  static size_t perExpert(rt::kernels::WeightFormat f, int64_t n, int64_t k) {
    return (rt::kernels::packedWeightBytes(f, n, k) + 63) & ~size_t{63};
  }

  /// A 2:4 weight: a sparse param or a concat of them.
  static bool isSparse24(Value v) {
    if (isa<Sparse24Type>(v.getType()))
      return true;
    Operation *def = v.getDefiningOp();
    return def && isa<ConcatWeightsOp>(def) &&
           llvm::all_of(def->getOperands(), isSparse24);
  }

  std::string name(Value v) {
    if (auto p = v.getDefiningOp<ParamOp>())
      return p.getName().str();
    if (Operation *op = v.getDefiningOp())
      return op->getName().getStringRef().str();
    return "weight";
  }

  int32_t add(rt::WeightInfo info, const void *bytes, size_t size) {
    // The functions of a module have their own ds.param ops for the same
    // checkpoint tensors: an entry equal in layout and bytes to one already
    // stored is shared, so each weight is stored once.
    std::string_view content(static_cast<const char *>(bytes), size);
    size_t hash = std::hash<std::string_view>()(content);
    auto [first, last] = byContent.equal_range(hash);
    for (auto it = first; it != last; ++it) {
      const rt::WeightInfo &old = infos[it->second];
      if (old.layout == info.layout && old.type == info.type &&
          old.shape == info.shape && old.group == info.group &&
          old.bytes == size && data.equals(old.offset, bytes, size))
        return it->second;
    }
    // A failed write (a full disk) is reported when the plan is done.
    absl::StatusOr<uint64_t> offset = data.append(bytes, size, 64);
    info.offset = offset.ok() ? *offset : 0;
    info.bytes = size;
    infos.push_back(std::move(info));
    int32_t id = static_cast<int32_t>(infos.size() - 1);
    byContent.emplace(hash, id);
    return id;
  }

  /// The checkpoint tensors of slice `e` of a quantized param (its values
  /// and its scales; an expert's own when the param stacks experts), or
  /// nulls.
  std::pair<const ds::TensorView *, const ds::TensorView *>
  quantizedTensors(ParamOp param, int64_t e) {
    int64_t src = param.isStacked() ? param.getSourceIndex(e) : -1;
    auto nameOf = [&](StringRef pattern) {
      return src < 0 ? pattern.str() : ParamOp::expertName(pattern, src);
    };
    return {checkpoint.find(nameOf(param.getName())),
            checkpoint.find(nameOf(*param.getScales()))};
  }

  /// The params a GEMM weight ([E,] N, K) is made of: itself, or the parts
  /// of a concat along N (fused gate/up or QKV projections), in order.
  static SmallVector<ParamOp> rowParts(Value v) {
    if (auto p = v.getDefiningOp<ParamOp>())
      return {p};
    Operation *def = v.getDefiningOp();
    int64_t axis = -1;
    if (auto c = dyn_cast_or_null<ConcatWeightsOp>(def))
      axis = c.getAxis();
    else if (auto c = dyn_cast_or_null<tensor::ConcatOp>(def))
      axis = c.getDim();
    RankedTensorType t = getLogicalTensorType(v.getType());
    if (axis < 0 || !t || axis != t.getRank() - 2)
      return {};
    SmallVector<ParamOp> parts;
    for (Value in : def->getOperands()) {
      auto p = in.getDefiningOp<ParamOp>();
      if (!p)
        return {};
      parts.push_back(p);
    }
    return parts;
  }

  /// A param's quantized type when it is symmetric with scales (no zero
  /// points) and, if it selects rows, selects whole experts; else null.
  static QTensorType scaledQuantized(ParamOp param) {
    auto type = dyn_cast<QTensorType>(param.getType());
    if (!type || param.getZeroPoints() || !param.getScales() ||
        (param.getSelect() && !param.isStacked()))
      return nullptr;
    return type;
  }

  /// int8 with one scale per output row (ds-quantize's int8/w8a8 weights)
  /// stays int8, also when concatenated along N: the GEMM widens it in
  /// registers.
  /// Without a sink, only checks that the weight is such.
  LogicalResult packInt8(Value v, int64_t experts, int64_t n, int64_t k,
                         const ExpertSink *sink, bool dot = false) {
    auto format =
        dot ? rt::kernels::WeightFormat::I8Dot : rt::kernels::WeightFormat::I8;
    SmallVector<ParamOp> parts = rowParts(v);
    if (parts.empty())
      return failure();
    for (ParamOp param : parts) {
      QTensorType type = scaledQuantized(param);
      if (!type)
        return failure();
      ds::QScheme scheme = getQScheme(type);
      if (scheme.storage != ds::QStorage::I8)
        return failure();
      std::vector<int64_t> rowwise(type.getRank(), 1);
      rowwise.back() = 0;
      if (scheme.block != rowwise)
        return failure();
    }
    std::string bytes(sink ? perExpert(format, n, k) : 0, '\0');
    std::vector<int8_t> values(sink ? n * k : 0);
    std::vector<float> scales(n);
    for (int64_t e = 0; e < experts; ++e) {
      int64_t row = 0;
      for (ParamOp param : parts) {
        auto [q, s] = quantizedTensors(param, e);
        // A stacked param's tensors are the expert's own; an [E, N, K] one
        // holds all experts.
        int64_t slices = param.isStacked() ? 1 : experts;
        int64_t slice = param.isStacked() ? 0 : e;
        if (!q || !s || q->dtype != ds::DType::I8 ||
            s->numElements() < slices || s->numElements() % slices ||
            q->numElements() != s->numElements() * k)
          return failure(); // the f32 path reports what is wrong
        int64_t rows = s->numElements() / slices;
        if (row + rows > n)
          return failure();
        if (sink) {
          std::memcpy(values.data() + row * k, q->data + slice * rows * k,
                      rows * k);
          // Read once: the resident set stays near the weight being packed.
          q->releasePages(slice * rows * k, rows * k);
          for (int64_t j = 0; j < rows; ++j)
            scales[row + j] = s->floatAt(slice * rows + j);
        }
        row += rows;
      }
      if (row != n)
        return failure();
      if (!sink)
        continue;
      if (dot)
        rt::kernels::packWeightI8Dot(values.data(), scales.data(), n, k,
                                     bytes.data());
      else
        rt::kernels::packWeightI8(values.data(), scales.data(), n, k,
                                  bytes.data());
      (*sink)(bytes.data(), bytes.size());
    }
    return success();
  }

  /// Signed int4 with K groups (ds-quantize int4 without zero points) and
  /// FP8 e4m3 with 128x128-style blocks (DeepSeek checkpoints, ds-quantize
  /// fp8) stay narrow, also when concatenated along N (with one K group size
  /// for all parts): the GEMM widens them in registers.
  /// With `dot`, only int4 with f16 scales in groups of a multiple of 8
  /// that divide K, packed for W4A8 (WeightFormat::I4Dot).
  /// Without a sink, only checks that the weight is such (and sets `info`).
  LogicalResult packGrouped(Value v, int64_t experts, int64_t n, int64_t k,
                            const ExpertSink *sink, rt::WeightInfo &info,
                            bool dot = false) {
    SmallVector<ParamOp> parts = rowParts(v);
    if (parts.empty())
      return failure();
    struct Part {
      ParamOp param;
      ds::QScheme scheme;
      int64_t rowBlock;
    };
    SmallVector<Part> schemes;
    int64_t group = -1;
    for (ParamOp param : parts) {
      QTensorType type = scaledQuantized(param);
      if (!type)
        return failure();
      ds::QScheme scheme = getQScheme(type);
      std::vector<int64_t> block = scheme.block;
      if (block.size() == 3) { // experts are quantized one by one
        if (block[0] != 1)
          return failure();
        block.erase(block.begin());
      }
      if (block.size() != 2)
        return failure();
      int64_t rows = getLogicalTensorType(param.getType()).getShape().end()[-2];
      int64_t rowBlock = block[0] == 0 ? rows : block[0];
      int64_t g = block[1] == 0 ? k : block[1];
      if (!schemes.empty() &&
          (scheme.storage != schemes[0].scheme.storage || g != group))
        return failure();
      group = g;
      schemes.push_back({param, scheme, rowBlock});
    }
    ds::QStorage storage = schemes[0].scheme.storage;
    bool int4 = storage == ds::QStorage::I4;
    bool fp8 = storage == ds::QStorage::F8E4M3;
    if (!int4 && !fp8)
      return failure();
    if (int4 &&
        llvm::any_of(schemes, [](const Part &p) { return p.rowBlock != 1; }))
      return failure();
    int64_t groups = (k + group - 1) / group;
    // int4 scales stored as f16 (ds-quantize's default, as llama.cpp's
    // Q4_0) stay f16 in the packed weight: 4.5 bits a weight at group 32.
    bool halfScales = int4 && llvm::all_of(schemes, [&](const Part &p) {
                        const ds::TensorView *s =
                            quantizedTensors(p.param, 0).second;
                        return s && s->dtype == ds::DType::F16;
                      });
    if (dot && (!int4 || !halfScales || group % 8 != 0 || k % group != 0))
      return failure();
    auto format = !int4        ? rt::kernels::WeightFormat::F8
                  : dot        ? rt::kernels::WeightFormat::I4Dot
                  : halfScales ? rt::kernels::WeightFormat::I4H
                               : rt::kernels::WeightFormat::I4;
    size_t one = (rt::kernels::packedWeightBytes(format, n, k, group) + 63) &
                 ~size_t{63};
    std::string bytes(sink ? one : 0, '\0');
    std::vector<float> values(sink ? n * k : 0), scales(sink ? n * groups : 0);
    for (int64_t e = 0; e < experts; ++e) {
      int64_t row = 0;
      for (Part &part : schemes) {
        auto [q, s] = quantizedTensors(part.param, e);
        int64_t rows =
            getLogicalTensorType(part.param.getType()).getShape().end()[-2];
        // A stacked param's tensors are the expert's own; an [E, N, K] one
        // holds all experts.
        bool all = !part.param.isStacked() && experts > 1;
        std::vector<int64_t> shape{rows, k};
        if (all)
          shape.insert(shape.begin(), experts);
        int64_t rowBlocks = (rows + part.rowBlock - 1) / part.rowBlock;
        int64_t slice = all ? e : 0;
        if (!q || !s || row + rows > n ||
            q->dtype != ds::storageDType(storage) ||
            q->shape != ds::storageShape(shape, storage) ||
            s->numElements() != (all ? experts : 1) * rowBlocks * groups)
          return failure(); // the f32 path reports what is wrong
        if (!sink) {
          row += rows;
          continue;
        }
        // Only this expert's rows (storage packs along K only), a few at a
        // time.
        const int64_t rowElements = ds::storageShape({1, k}, storage).back();
        const size_t rowBytes = rowElements * ds::dtypeSize(q->dtype);
        const uint8_t *rowData = q->data + slice * rows * rowBytes;
        const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 20) / k);
        for (int64_t r = 0; r < rows; r += chunk) {
          const int64_t count = std::min(chunk, rows - r);
          std::vector<float> decoded =
              ds::decodeValues(rowData + r * rowBytes, {count, k}, storage);
          std::copy_n(decoded.begin(), count * k,
                      values.begin() + (row + r) * k);
        }
        q->releasePages(slice * rows * rowElements, rows * rowElements);
        // Per-row scales: a row block's scale repeats over its rows.
        const int64_t base = slice * rowBlocks * groups;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g = 0; g < groups; ++g)
            scales[(row + r) * groups + g] =
                s->floatAt(base + (r / part.rowBlock) * groups + g);
        row += rows;
      }
      if (row != n)
        return failure();
      if (!sink)
        continue;
      if (dot)
        rt::kernels::packWeightI4Dot(values.data(), scales.data(), n, k, group,
                                     bytes.data());
      else if (halfScales)
        rt::kernels::packWeightI4H(values.data(), scales.data(), n, k, group,
                                   bytes.data());
      else if (int4)
        rt::kernels::packWeightI4(values.data(), scales.data(), n, k, group,
                                  bytes.data());
      else
        rt::kernels::packWeightF8(values.data(), scales.data(), n, k, group,
                                  bytes.data());
      (*sink)(bytes.data(), bytes.size());
    }
    info.layout = !int4        ? rt::WeightLayout::PackedF8
                  : dot        ? rt::WeightLayout::PackedI4Dot
                  : halfScales ? rt::WeightLayout::PackedI4H
                               : rt::WeightLayout::PackedI4;
    info.group = group;
    return success();
  }

  /// kv_b as the narrow absorbed projections read it: one 2-D quantized
  /// param with scales and no zero points; else a null type.
  static std::pair<ParamOp, QTensorType> quantizedKvB(Value kvB) {
    auto param = kvB.getDefiningOp<ParamOp>();
    if (!param || param.getZeroPoints() || !param.getScales() ||
        param.getSelect() || param.isStacked())
      return {};
    auto type = dyn_cast<QTensorType>(param.getType());
    if (!type || type.getRank() != 2)
      return {};
    return {param, type};
  }

  /// An absorbed MLA projection of kv_b, [heads, n, k] in `layout`, each
  /// head `one` bytes packed by `packHead(h, dst)`.
  int32_t addPerHead(Value kvB, StringRef suffix, rt::WeightLayout layout,
                     size_t one, int64_t heads, int64_t n, int64_t k,
                     int64_t group,
                     llvm::function_ref<void(int64_t, char *)> packHead) {
    std::string bytes(one * heads, '\0');
    for (int64_t h = 0; h < heads; ++h)
      packHead(h, bytes.data() + h * one);
    rt::WeightInfo info;
    info.name = name(kvB) + suffix.str();
    info.layout = layout;
    info.group = group;
    info.shape = {heads, n, k};
    return add(info, bytes.data(), bytes.size());
  }

  /// mlaProjections for an FP8 e4m3 kv_b with tile scales ([bN, bK]
  /// blocks, as DeepSeek's checkpoints and ds-quantize fp8 store it): W_ukᵀ
  /// and W_uv stay e4m3 with the tiles' scales, exactly. W_uv's rows keep
  /// their block row's scales in K groups of bK; W_ukᵀ's K (a head's nope
  /// rows of kv_b) is grouped so that each group lies in one block row: the
  /// whole head part when it does, else bN rows when heads and their parts
  /// start on block rows. Otherwise (or when anything is not as expected)
  /// the f32 path.
  LogicalResult mlaF8(Value kvB, int64_t heads, int64_t dn, int64_t dv,
                      MLAWeights &out) {
    auto [param, type] = quantizedKvB(kvB);
    if (!type)
      return failure();
    ds::QScheme scheme = getQScheme(type);
    if (scheme.storage != ds::QStorage::F8E4M3)
      return failure();
    const int64_t stride = dn + dv, rows = heads * stride;
    const int64_t rank = type.getShape()[1];
    if (type.getShape()[0] != rows)
      return failure();
    std::vector<int64_t> block = ds::resolvedBlock({rows, rank}, scheme.block);
    const int64_t bN = block[0], bK = block[1];
    const int64_t scaleCols = (rank + bK - 1) / bK;
    int64_t ukGroup = dn;
    for (int64_t h = 0; h < heads; ++h)
      if ((h * stride) / bN != (h * stride + dn - 1) / bN)
        ukGroup = 0;
    if (ukGroup == 0 && stride % bN == 0 && dn % bN == 0)
      ukGroup = bN;
    if (ukGroup == 0)
      return failure();
    auto [q, s] = quantizedTensors(param, 0);
    if (!q || !s || q->dtype != ds::DType::F8E4M3 ||
        q->numElements() != rows * rank ||
        s->numElements() != ((rows + bN - 1) / bN) * scaleCols)
      return failure(); // the f32 path reports what is wrong
    auto value = [&](int64_t row, int64_t col) {
      return ds::f8e4m3ToFloat(q->data[row * rank + col]);
    };
    auto scaleAt = [&](int64_t row, int64_t col) {
      return s->floatAt((row / bN) * scaleCols + col / bK);
    };
    auto add3 = [&](StringRef suffix, int64_t n, int64_t k, int64_t group,
                    auto element, auto scaleOf) {
      const int64_t groups = (k + group - 1) / group;
      std::vector<float> w(n * k), scales(n * groups);
      return addPerHead(kvB, suffix, rt::WeightLayout::PackedF8,
                        (rt::kernels::packedWeightBytes(
                             rt::kernels::WeightFormat::F8, n, k, group) +
                         63) &
                            ~size_t{63},
                        heads, n, k, group, [&](int64_t h, char *dst) {
                          for (int64_t r = 0; r < n; ++r) {
                            for (int64_t g = 0; g < groups; ++g)
                              scales[r * groups + g] = scaleOf(h, r, g * group);
                            for (int64_t c = 0; c < k; ++c)
                              w[r * k + c] = element(h, r, c);
                          }
                          rt::kernels::packWeightF8(w.data(), scales.data(), n,
                                                    k, group, dst);
                        });
    };
    // W_ukᵀ of head h: [rank, dn], element (r, i) = kv_b[h * stride + i, r].
    out.ukT = add3(
        ":uk_t", rank, dn, ukGroup,
        [&](int64_t h, int64_t r, int64_t i) {
          return value(h * stride + i, r);
        },
        [&](int64_t h, int64_t r, int64_t i) {
          return scaleAt(h * stride + i, r);
        });
    // W_uv of head h: [dv, rank], row c = kv_b's row h * stride + dn + c.
    out.uv = add3(
        ":uv", dv, rank, bK,
        [&](int64_t h, int64_t c, int64_t r) {
          return value(h * stride + dn + c, r);
        },
        [&](int64_t h, int64_t c, int64_t r) {
          return scaleAt(h * stride + dn + c, r);
        });
    q->releasePages();
    return success();
  }

  /// mlaProjections for an int8 kv_b with one scale per row.
  LogicalResult mlaInt8(Value kvB, int64_t heads, int64_t dn, int64_t dv,
                        MLAWeights &out) {
    auto [param, type] = quantizedKvB(kvB);
    if (!type)
      return failure();
    ds::QScheme scheme = getQScheme(type);
    if (scheme.storage != ds::QStorage::I8 ||
        scheme.block != std::vector<int64_t>{1, 0})
      return failure();
    int64_t rows = heads * (dn + dv), rank = type.getShape()[1];
    auto [q, s] = quantizedTensors(param, 0);
    if (!q || !s || q->dtype != ds::DType::I8 ||
        q->numElements() != rows * rank || s->numElements() != rows ||
        type.getShape()[0] != rows)
      return failure(); // the f32 path reports what is wrong
    const ds::TensorView *rowScales = s;
    const auto *values = reinterpret_cast<const int8_t *>(q->data);
    auto add3 = [&](StringRef suffix, int64_t n, int64_t k, auto element,
                    auto scaleOf) {
      std::vector<int8_t> w(n * k);
      std::vector<float> scales(n);
      return addPerHead(kvB, suffix, rt::WeightLayout::PackedI8,
                        perExpert(rt::kernels::WeightFormat::I8, n, k), heads,
                        n, k, 0, [&](int64_t h, char *dst) {
                          for (int64_t r = 0; r < n; ++r) {
                            scales[r] = scaleOf(h, r);
                            for (int64_t c = 0; c < k; ++c)
                              w[r * k + c] = element(h, r, c);
                          }
                          rt::kernels::packWeightI8(w.data(), scales.data(), n,
                                                    k, dst);
                        });
    };
    out.ukT = add3(
        ":uk_t", rank, dn,
        [&](int64_t h, int64_t r, int64_t i) {
          return values[(h * (dn + dv) + i) * rank + r];
        },
        [](int64_t, int64_t) { return 1.0f; });
    out.uv = add3(
        ":uv", dv, rank,
        [&](int64_t h, int64_t c, int64_t r) {
          return values[(h * (dn + dv) + dn + c) * rank + r];
        },
        [&](int64_t h, int64_t c) {
          return rowScales->floatAt(h * (dn + dv) + dn + c);
        });
    std::vector<float> kScales(heads * dn);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < dn; ++i)
        kScales[h * dn + i] = rowScales->floatAt(h * (dn + dv) + i);
    rt::WeightInfo info;
    info.name = name(kvB) + ":uk_t_k_scales";
    info.layout = rt::WeightLayout::Raw;
    info.shape = {heads, dn};
    out.kScales = add(info, kScales.data(), kScales.size() * sizeof(float));
    return success();
  }

  /// The f32 value of a weight expression: params (dequantized or
  /// decompressed as the interpreter loads them) and concats of them.
  FailureOr<Tensor> evaluate(Value v) { return evaluateWeight(v, provider); }

public:
  /// Reads a partitioned module's sharded params as this process's blocks.
  void setProcess(int64_t rank) {
    provider.setProcess(rank);
    processIndex = rank;
  }
  /// The process whose plan this is (0 for a whole model).
  int64_t process() const { return processIndex; }

private:
  CheckpointWeights provider;
  int64_t processIndex = 0;
  const ds::Checkpoint &checkpoint;
  std::map<std::pair<const void *, int>, int32_t> ids;
  /// Packed GEMM weights by what they are made of (weightKey).
  std::map<std::string, int32_t> bySource;
  /// Absorbed MLA projections by what kv_b is made of (weightKey).
  std::map<std::string, MLAWeights> mlaIds;
  std::unordered_multimap<size_t, int32_t> byContent;
};

class FunctionBuilder {
public:
  FunctionBuilder(func::FuncOp fn, WeightTable &weights, KernelModule &kernels,
                  std::vector<rt::CacheInfo> &caches,
                  ds::Progress *progress = nullptr)
      : fn(fn), weights(weights), kernels(kernels), caches(caches),
        progress(progress) {}

  /// The plan of the function, named `name` (a pipeline stage's is named
  /// as the whole function).
  FailureOr<rt::FunctionPlan> build(StringRef name);

private:
  int32_t newValue(Value v, rt::ValueInfo::Kind kind, int32_t index,
                   Dims shape) {
    rt::ValueInfo info;
    info.kind = kind;
    info.index = index;
    Type elt = getElementTypeOrSelf(v.getType());
    info.type = elt.isInteger(32)                  ? rt::ElemType::I32
                : isa<IntegerType, IndexType>(elt) ? rt::ElemType::I64
                                                   : rt::ElemType::F32;
    // A narrow KV cache is stored narrow; bf16 / f16 activations live in
    // f32 memory (see visit).
    if (kind == rt::ValueInfo::Kind::Cache ||
        kind == rt::ValueInfo::Kind::Alias)
      info.type = cacheType(elt);
    info.shape = std::move(shape);
    plan.values.push_back(std::move(info));
    int32_t id = static_cast<int32_t>(plan.values.size() - 1);
    ids[v] = id;
    return id;
  }
  int32_t id(Value v) { return ids.lookup(v); }
  bool known(Value v) { return ids.count(v); }

  /// The run-time size of dim `axis` of `v`.
  rt::DimExpr dim(Value v, int64_t axis) {
    RankedTensorType t = getLogicalTensorType(v.getType());
    if (!t.isDynamicDim(axis))
      return rt::DimExpr::of(t.getDimSize(axis));
    return plan.values[id(v)].shape[axis];
  }
  /// Result shape: static dims from the type, dynamic ones from `source`
  /// (dim i of the result is dim i of the source).
  Dims like(Value result, Value source) {
    RankedTensorType t = getLogicalTensorType(result.getType());
    Dims d;
    for (int64_t i = 0; i < t.getRank(); ++i)
      d.push_back(t.isDynamicDim(i) ? dim(source, i)
                                    : rt::DimExpr::of(t.getDimSize(i)));
    return d;
  }
  /// An index SSA value as a dim (tensor.dim, constants, products).
  FailureOr<rt::DimExpr> indexValue(Value v) {
    if (auto c = v.getDefiningOp<arith::ConstantIndexOp>())
      return rt::DimExpr::of(c.value());
    if (auto d = v.getDefiningOp<tensor::DimOp>()) {
      std::optional<int64_t> axis = d.getConstantIndex();
      if (axis && known(d.getSource()))
        return dim(d.getSource(), *axis);
    }
    if (auto m = v.getDefiningOp<arith::MulIOp>()) {
      auto a = indexValue(m.getLhs()), b = indexValue(m.getRhs());
      if (succeeded(a) && succeeded(b))
        return product(*a, *b);
    }
    return failure();
  }
  /// How a cache of element type `elt` is stored.
  static rt::ElemType cacheType(Type elt) {
    return elt.isBF16()                 ? rt::ElemType::BF16
           : elt.isF16()                ? rt::ElemType::F16
           : isa<Float8E4M3FNType>(elt) ? rt::ElemType::F8E4M3
                                        : rt::ElemType::F32;
  }
  bool isF32Activation(Value v) {
    auto t = dyn_cast<RankedTensorType>(v.getType());
    return t && t.getElementType().isF32();
  }
  /// The cache a value lives in (through cache updates), or -1.
  int32_t cacheOf(Value v) {
    if (!known(v))
      return -1;
    int32_t i = id(v);
    while (plan.values[i].kind == rt::ValueInfo::Kind::Alias)
      i = plan.values[i].index;
    return plan.values[i].kind == rt::ValueInfo::Kind::Cache ? i : -1;
  }

  /// Fails unless `scale` (an attention's k_scale, ...; 1 when absent) is
  /// the scale of the cache behind value id `cache`.
  LogicalResult checkReadScale(Operation *op, int32_t cache,
                               std::optional<APFloat> scale, StringRef name) {
    const double want = caches[plan.values[cache].index].scale;
    const double got = scale ? scale->convertToDouble() : 1.0;
    if (got != want)
      return op->emitError()
             << name << " " << got
             << " differs from the scale of the cache it reads, " << want;
    return success();
  }

  rt::Step &step(Operation *op, rt::StepConfig config) {
    rt::Step s;
    s.config = std::move(config);
    std::string loc;
    llvm::raw_string_ostream os(loc);
    os << op->getName() << " at " << op->getLoc();
    s.location = os.str();
    plan.steps.push_back(std::move(s));
    return plan.steps.back();
  }
  LogicalResult weight(rt::Step &s, Value v, Operation *op, bool packed) {
    FailureOr<int32_t> w = packed ? weights.packed(v, op) : weights.raw(v);
    if (failed(w))
      return failure();
    s.weights.push_back(*w);
    return success();
  }
  /// This process's block of `local` items (experts, vocabulary rows) of
  /// `op`, dealt over `axes` (its `what`) of grid `gridRef`.
  FailureOr<ProcessGrid::Block> blockOf(Operation *op,
                                        FlatSymbolRefAttr gridRef,
                                        ArrayRef<int16_t> axes, int64_t local,
                                        StringRef what) {
    auto gridOp =
        SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(op, gridRef);
    if (!gridOp)
      return op->emitError("no grid ") << gridRef;
    std::optional<ProcessGrid::Block> block =
        ProcessGrid(gridOp.getShape())
            .blockAlong(weights.process(), axes, local);
    if (!block)
      return op->emitError()
             << what << " are not ascending axes of " << gridRef;
    return *block;
  }
  static rt::steps::ActQuant actQuant(ActQuantAttr q) {
    rt::steps::ActQuant a;
    if (!q)
      return a;
    a.storage = static_cast<int32_t>(*getQStorage(q.getStorageType()));
    a.group = q.getGroup();
    a.scale = q.isStatic() ? q.getScale().convertToDouble() : 0.0;
    return a;
  }

  /// How a value's elements are stored: f32, or rounded to bf16 / f16
  /// (kept in f32 memory).
  static int64_t rounding(Value v) {
    Type elt = getElementTypeOrSelf(v.getType());
    if (elt.isBF16())
      return static_cast<int64_t>(rt::kernels::Round::BF16);
    if (elt.isF16())
      return static_cast<int64_t>(rt::kernels::Round::F16);
    return static_cast<int64_t>(rt::kernels::Round::None);
  }

  /// #ds.act_quant<i8, group = 0> (per token, or one static scale): what
  /// the W8A8 integer GEMM computes.
  static bool isInt8PerToken(ActQuantAttr q) {
    if (!q || q.getGroup() != 0)
      return false;
    std::optional<ds::QStorage> st = getQStorage(q.getStorageType());
    return st && *st == ds::QStorage::I8;
  }

  LogicalResult visit(Operation *op);

  func::FuncOp fn;
  WeightTable &weights;
  KernelModule &kernels;
  std::vector<rt::CacheInfo> &caches;
  ds::Progress *progress;
  rt::FunctionPlan plan;
  llvm::DenseMap<Value, int32_t> ids;
};

FailureOr<rt::FunctionPlan> FunctionBuilder::build(StringRef name) {
  plan.name = name.str();
  Block &body = fn.getBody().front();
  // Caches: an argument used only as the cache of one ds.cache_update.
  int32_t cacheIndex = 0;
  SmallVector<BlockArgument> cacheArgs;
  for (BlockArgument arg : body.getArguments()) {
    auto t = dyn_cast<RankedTensorType>(arg.getType());
    if (!t)
      return fn.emitError("the CPU backend takes tensor arguments only");
    bool isCache =
        arg.hasOneUse() && isa<CacheUpdateOp>(*arg.getUsers().begin()) &&
        cast<CacheUpdateOp>(*arg.getUsers().begin()).getCache() == arg;
    if (isCache) {
      cacheArgs.push_back(arg);
      continue;
    }
    Dims shape;
    for (int64_t i = 0; i < t.getRank(); ++i)
      shape.push_back(t.isDynamicDim(i) ? rt::DimExpr{1, {}} // set below
                                        : rt::DimExpr::of(t.getDimSize(i)));
    int32_t v = newValue(arg, rt::ValueInfo::Kind::Input,
                         static_cast<int32_t>(arg.getArgNumber()), shape);
    // Dynamic input dims are themselves.
    for (int64_t i = 0; i < t.getRank(); ++i)
      if (t.isDynamicDim(i))
        plan.values[v].shape[i] = rt::DimExpr::ref(v, static_cast<int32_t>(i));
    plan.inputs.push_back(v);
  }
  for (BlockArgument arg : cacheArgs) {
    auto t = cast<RankedTensorType>(arg.getType());
    auto update = cast<CacheUpdateOp>(*arg.getUsers().begin());
    if (t.getRank() < 2 || !t.isDynamicDim(0) ||
        llvm::any_of(t.getShape().drop_front(),
                     [](int64_t d) { return ShapedType::isDynamic(d); }))
      return update.emitError("the CPU backend needs caches shaped [batch, "
                              "max_len, ...] with static rows");
    if (!known(update.getPositions()))
      return update.emitError("cache positions must be a function argument");
    std::vector<int64_t> rowShape(t.getShape().begin() + 1, t.getShape().end());
    Type elt = t.getElementType();
    if (!elt.isF32() && !elt.isBF16() && !elt.isF16() &&
        !isa<Float8E4M3FNType>(elt))
      return update.emitError("the CPU backend stores KV caches in f32, bf16, "
                              "f16 or f8E4M3FN, not ")
             << elt;
    rt::ElemType type = cacheType(elt);
    // An e4m3 cache's scale: every op writing or reading it carries the
    // same one (the verifiers check it along each chain of updates).
    const double scale =
        update.getKvScale() ? update.getKvScale()->convertToDouble() : 1.0;
    if (!rt::validCacheScale(type, scale))
      return update.emitError("kv_scale ")
             << scale << " does not fit a " << rt::elemTypeName(type)
             << " cache";
    if (cacheIndex < static_cast<int32_t>(caches.size())) {
      if (caches[cacheIndex].rowShape != rowShape ||
          caches[cacheIndex].type != type)
        return update.emitError("cache ")
               << cacheIndex
               << " has another shape or type in another function";
      if (caches[cacheIndex].scale != scale)
        return update.emitError("cache ")
               << cacheIndex << " is written with kv_scale " << scale
               << " here and " << caches[cacheIndex].scale
               << " in another function";
    } else {
      caches.push_back(
          {"cache" + std::to_string(cacheIndex), rowShape, type, scale});
    }
    Dims shape{dim(update.getPositions(), 0)};
    for (int64_t d : rowShape)
      shape.push_back(rt::DimExpr::of(d));
    newValue(arg, rt::ValueInfo::Kind::Cache, cacheIndex++, shape);
  }
  if (cacheIndex != static_cast<int32_t>(caches.size()) && cacheIndex != 0)
    return fn.emitError("functions of the model disagree on their caches");

  for (Operation &op : body.without_terminator()) {
    size_t before = weights.data.size();
    if (failed(visit(&op)))
      return failure();
    if (progress)
      progress->advance(1, weights.data.size() - before);
  }
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  for (Value v : ret.getOperands()) {
    if (!known(v))
      return ret.emitError("the CPU backend cannot return a compile-time "
                           "value");
    plan.outputs.push_back(id(v));
  }
  return plan;
}

LogicalResult FunctionBuilder::visit(Operation *op) {
  using Kind = rt::ValueInfo::Kind;
  // Compile-time values: weights and index arithmetic are folded into the
  // plan where they are used.
  if (isa<ParamOp, ConcatWeightsOp, arith::ConstantOp, tensor::DimOp,
          arith::MulIOp>(op))
    return success();
  // A received value's shape (its receive reads the dims, not the data).
  if (auto e = dyn_cast<tensor::EmptyOp>(op)) {
    if (llvm::all_of(e->getUsers(),
                     [](Operation *u) { return isa<shard::RecvOp>(u); }))
      return success();
    return op->emitError("the CPU backend uses tensor.empty only as the "
                         "shape of a receive");
  }
  if (auto c = dyn_cast<tensor::ConcatOp>(op)) {
    if (llvm::all_of(c.getOperands(), [&](Value v) { return !known(v); }))
      return success();
    return op->emitError("the CPU backend concatenates weights only");
  }
  // bf16 / f16 activations live in f32 memory, rounded by the ops that
  // produce them: the GEMM ops and generated elementwise kernels round as
  // the interpreter does; moving data keeps values as they are.
  bool roundsLowPrecision =
      isa<LinearOp, FusedLinearOp, FusedMoEOp, FusedElementwiseOp, SplitOp,
          SplitHeadsOp, MergeHeadsOp, tensor::CollapseShapeOp,
          tensor::ExpandShapeOp>(op);
  for (Value v : op->getOperands()) {
    if (!isa<RankedTensorType>(v.getType()) || isF32Activation(v) ||
        !known(v) || plan.values[id(v)].type != rt::ElemType::F32)
      continue;
    if (!roundsLowPrecision || rounding(v) == 0)
      return op->emitError("the CPU backend runs f32 activations only (bf16 "
                           "and f16 ones in linear, MoE and elementwise ops)");
  }
  // A narrow KV cache is the one bf16 / f16 buffer: its update rounds the
  // rows it writes.
  auto update = dyn_cast<CacheUpdateOp>(op);
  int32_t updated = update ? cacheOf(update.getCache()) : -1;
  bool narrowCache =
      updated >= 0 && plan.values[updated].type != rt::ElemType::F32;
  if (!roundsLowPrecision && !narrowCache)
    for (Value r : op->getResults())
      if (isa<RankedTensorType>(r.getType()) && rounding(r) != 0)
        return op->emitError("the CPU backend computes this op's bf16 / f16 "
                             "result in f32 only");

  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](EmbeddingOp e) -> LogicalResult {
        rt::Step &s = step(e, rt::steps::Embedding{});
        if (failed(weight(s, e.getTable(), e, false)))
          return failure();
        if (auto gridRef = e.getVocabGridAttr()) {
          // This process's block of the vocabulary.
          FailureOr<ProcessGrid::Block> block = blockOf(
              e, gridRef, *e.getVocabGridAxes(),
              getLogicalTensorType(e.getTable().getType()).getDimSize(0),
              "vocab_grid_axes");
          if (failed(block))
            return failure();
          auto &c = s.as<rt::steps::Embedding>();
          c.firstRow = block->first;
          c.vocab = block->whole;
        }
        Dims shape;
        for (int64_t i = 0; i < e.getIds().getType().getRank(); ++i)
          shape.push_back(dim(e.getIds(), i));
        shape.push_back(dim(e.getTable(), 1));
        s.operands = {id(e.getIds())};
        s.results = {newValue(e.getResult(), Kind::Temp, -1, shape)};
        return success();
      })
      .Case([&](RMSNormOp n) -> LogicalResult {
        // Generated through linalg (a reduction and a scaling generic).
        FailureOr<std::string> sym = kernels.addRMSNorm(n);
        if (failed(sym))
          return failure();
        rt::Step &s =
            step(n, rt::steps::Generated{rt::steps::Generated::RMSNorm,
                                         n.getEpsilon().convertToDouble()});
        s.kernel = *sym;
        if (failed(weight(s, n.getWeight(), n, false)))
          return failure();
        s.operands = {id(n.getInput())};
        s.results = {newValue(n.getResult(), Kind::Temp, -1,
                              like(n.getResult(), n.getInput()))};
        return success();
      })
      .Case<LinearOp, FusedLinearOp>([&](Operation *o) -> LogicalResult {
        auto fused = dyn_cast<FusedLinearOp>(o);
        Value input = o->getOperand(0), w = o->getOperand(1);
        Value bias = fused ? fused.getBias() : cast<LinearOp>(o).getBias();
        rt::Step &s = step(o, rt::steps::Linear{});
        // int8 activations per token (or calibrated) times int8 weights:
        // the integer GEMM quantizes its input itself.
        ActQuantAttr inQuant = fused ? fused.getInputQuantAttr() : nullptr;
        bool w8a8 = false;
        FailureOr<int32_t> wid =
            weights.packed(w, o, isInt8PerToken(inQuant), &w8a8);
        if (failed(wid))
          return failure();
        s.weights.push_back(*wid);
        if (bias && failed(weight(s, bias, o, false)))
          return failure();
        Value norm = fused ? fused.getNormWeight() : Value();
        if (norm && failed(weight(s, norm, o, false)))
          return failure();
        int64_t act = -1;
        if (fused && fused.getActivation())
          act = static_cast<int64_t>(*fused.getActivation());
        bool gated = fused && fused.getGated();
        Value residual = fused ? fused.getResidual() : Value();
        auto &c = s.as<rt::steps::Linear>();
        c.norm = static_cast<bool>(norm);
        c.bias = static_cast<bool>(bias);
        c.activation = static_cast<int32_t>(act);
        c.gated = gated;
        c.residual = static_cast<bool>(residual);
        c.normEpsilon = fused && fused.getNormEpsilon()
                            ? fused.getNormEpsilon()->convertToDouble()
                            : 0.0;
        c.inputQuant = actQuant(w8a8 ? nullptr : inQuant);
        // W8A8: the integer GEMM's static input scale, if calibrated.
        if (w8a8 && inQuant.isStatic())
          c.inputQuant.scale = inQuant.getScale().convertToDouble();
        c.inputRound = rounding(input);
        c.outputRound = rounding(o->getResult(0));
        s.operands = {id(input)};
        if (residual)
          s.operands.push_back(id(residual));
        s.results = {newValue(o->getResult(0), Kind::Temp, -1,
                              like(o->getResult(0), input))};
        return success();
      })
      .Case([&](SplitOp sp) -> LogicalResult {
        if (!known(sp.getInput()))
          return sp.emitError("the CPU backend splits activations only");
        rt::Step &s = step(
            sp, rt::steps::Copy{static_cast<int64_t>(sp.getAxis()),
                                std::vector<int64_t>(sp.getSizes().begin(),
                                                     sp.getSizes().end())});
        s.operands = {id(sp.getInput())};
        for (Value r : sp.getResults())
          s.results.push_back(
              newValue(r, Kind::Temp, -1, like(r, sp.getInput())));
        return success();
      })
      .Case<SplitHeadsOp, MergeHeadsOp, tensor::CollapseShapeOp,
            tensor::ExpandShapeOp>([&](Operation *o) -> LogicalResult {
        Value in = o->getOperand(0), out = o->getResult(0);
        auto outType = cast<RankedTensorType>(out.getType());
        auto inType = cast<RankedTensorType>(in.getType());
        Dims shape;
        if (auto c = dyn_cast<tensor::CollapseShapeOp>(o)) {
          for (ReassociationIndices group : c.getReassociationIndices()) {
            rt::DimExpr d = rt::DimExpr::of(1);
            for (int64_t i : group)
              d = product(d, dim(in, i));
            shape.push_back(d);
          }
        } else if (auto e = dyn_cast<tensor::ExpandShapeOp>(o)) {
          auto mixed = e.getMixedOutputShape();
          for (OpFoldResult ofr : mixed) {
            if (auto attr = dyn_cast<Attribute>(ofr)) {
              shape.push_back(
                  rt::DimExpr::of(cast<IntegerAttr>(attr).getInt()));
              continue;
            }
            FailureOr<rt::DimExpr> d = indexValue(cast<Value>(ofr));
            if (failed(d))
              return e.emitError("the CPU backend cannot size this reshape");
            shape.push_back(*d);
          }
        } else {
          // Heads split or merge the trailing axes; leading dims carry over.
          for (int64_t i = 0; i < outType.getRank(); ++i)
            shape.push_back(!outType.isDynamicDim(i)
                                ? rt::DimExpr::of(outType.getDimSize(i))
                                : dim(in, i));
          (void)inType;
        }
        if (!known(in))
          return o->emitError("the CPU backend reshapes activations only");
        rt::Step &s = step(o, rt::steps::Alias{});
        s.operands = {id(in)};
        s.results = {newValue(out, Kind::Alias, id(in), shape)};
        return success();
      })
      .Case([&](RopeOp r) -> LogicalResult {
        RopeAttr rope = r.getRope();
        rt::steps::Rope c;
        c.rotaryDim = rope.getDim();
        c.style = static_cast<int32_t>(rope.getStyle());
        c.attentionScaling = rope.getAttentionScaling();
        for (float f : rope.computeInvFreq())
          c.invFreq.push_back(f);
        rt::Step &s = step(r, std::move(c));
        s.operands = {id(r.getInput()), id(r.getPositions())};
        s.results = {newValue(r.getResult(), Kind::Temp, -1,
                              like(r.getResult(), r.getInput()))};
        return success();
      })
      .Case([&](CacheUpdateOp c) -> LogicalResult {
        int32_t cache = cacheOf(c.getCache());
        if (cache < 0)
          return c.emitError("the CPU backend updates caches passed as "
                             "function arguments only");
        rt::Step &s = step(c, rt::steps::CacheUpdate{});
        s.operands = {id(c.getCache()), id(c.getPositions()),
                      id(c.getUpdate())};
        Dims shape = plan.values[cache].shape;
        s.results = {newValue(c.getResult(), Kind::Alias, cache, shape)};
        return success();
      })
      .Case([&](AttentionOp a) -> LogicalResult {
        // Keys and values from a cache (slot-indexed), or computed in the
        // graph ([batch, len, ...], batch row b is its own "slot").
        int32_t k = cacheOf(a.getK()), v = cacheOf(a.getV());
        bool cached = k >= 0 && v >= 0;
        if (!cached) {
          k = id(a.getK());
          v = id(a.getV());
        } else if (failed(checkReadScale(a, k, a.getKScale(), "k_scale")) ||
                   failed(checkReadScale(a, v, a.getVScale(), "v_scale"))) {
          return failure();
        }
        rt::Step &s =
            step(a, rt::steps::Attention{
                        a.getSlidingWindow()
                            ? static_cast<int64_t>(*a.getSlidingWindow())
                            : 0,
                        cached, a.getScale().convertToDouble()});
        s.operands = {id(a.getQ()), k, v, id(a.getPositions())};
        s.results = {newValue(a.getResult(), Kind::Temp, -1,
                              like(a.getResult(), a.getQ()))};
        return success();
      })
      .Case([&](MLAAttentionOp a) -> LogicalResult {
        int32_t ckv = cacheOf(a.getCKv()), kpe = cacheOf(a.getKPe());
        bool cached = ckv >= 0 && kpe >= 0;
        if (!cached) {
          ckv = id(a.getCKv());
          kpe = id(a.getKPe());
        } else if (failed(
                       checkReadScale(a, ckv, a.getCKvScale(), "c_kv_scale")) ||
                   failed(
                       checkReadScale(a, kpe, a.getKPeScale(), "k_pe_scale"))) {
          return failure();
        }
        rt::Step &s = step(
            a, rt::steps::MLAAttention{cached, a.getScale().convertToDouble()});
        auto qn = cast<RankedTensorType>(a.getQNope().getType());
        int64_t heads = qn.getDimSize(2), dn = qn.getDimSize(3);
        RankedTensorType kvb = getLogicalTensorType(a.getKvB().getType());
        if (ShapedType::isDynamic(heads) || ShapedType::isDynamic(dn) || !kvb ||
            kvb.getDimSize(0) % heads != 0)
          return a.emitError("the CPU backend needs static MLA head shapes");
        int64_t dv = kvb.getDimSize(0) / heads - dn;
        auto proj = weights.mlaProjections(a.getKvB(), heads, dn, dv);
        if (failed(proj))
          return failure();
        s.weights = {proj->ukT, proj->uv};
        if (proj->kScales >= 0)
          s.weights.push_back(proj->kScales);
        s.operands = {id(a.getQNope()), id(a.getQPe()), ckv, kpe,
                      id(a.getPositions())};
        s.results = {newValue(a.getResult(), Kind::Temp, -1,
                              like(a.getResult(), a.getQNope()))};
        return success();
      })
      .Case([&](FusedRouterOp r) -> LogicalResult {
        rt::Step &s = step(r, rt::steps::Router{});
        if (failed(weight(s, r.getWeight(), r, true)))
          return failure();
        if (r.getBias() && failed(weight(s, r.getBias(), r, false)))
          return failure();
        RoutingAttr routing = r.getRouting();
        auto &c = s.as<rt::steps::Router>();
        c.numExperts = routing.getNumExperts();
        c.topK = routing.getTopK();
        c.sigmoid = routing.getScoring() == ScoringFunc::sigmoid;
        c.nGroup = routing.getNGroup();
        c.topkGroup = routing.getTopkGroup();
        c.groupScoreMax = routing.getGroupScore() == GroupScore::max;
        c.normTopkProb = routing.getNormTopkProb();
        c.bias = static_cast<bool>(r.getBias());
        c.kept.assign(routing.getKept().begin(), routing.getKept().end());
        c.slots.assign(routing.getSlots().begin(), routing.getSlots().end());
        c.normEpsilon = routing.getNormEpsilon().convertToDouble();
        c.scalingFactor = routing.getRoutedScalingFactor().convertToDouble();
        s.operands = {id(r.getInput())};
        s.results = {newValue(r.getWeights(), Kind::Temp, -1,
                              like(r.getWeights(), r.getInput())),
                     newValue(r.getIndices(), Kind::Temp, -1,
                              like(r.getIndices(), r.getInput()))};
        return success();
      })
      .Case([&](FusedMoEOp m) -> LogicalResult {
        auto idxType = cast<RankedTensorType>(m.getIndices().getType());
        if (!idxType.getElementType().isInteger(32))
          return m.emitError("the CPU backend needs i32 expert indices");
        rt::Step &s = step(m, rt::steps::MoE{});
        // W8A8 experts: both GEMMs quantize their inputs per token.
        bool tryW8A8 = isInt8PerToken(m.getInputQuantAttr()) &&
                       !m.getInputQuantAttr().isStatic() &&
                       isInt8PerToken(m.getHiddenQuantAttr()) &&
                       !m.getHiddenQuantAttr().isStatic();
        bool guDot = false, downDot = false;
        FailureOr<int32_t> gu =
            weights.packed(m.getGateUp(), m, tryW8A8, &guDot);
        FailureOr<int32_t> dn =
            weights.packed(m.getDown(), m, tryW8A8, &downDot);
        if (failed(gu) || failed(dn))
          return failure();
        s.weights = {*gu, *dn};
        RankedTensorType down = getLogicalTensorType(m.getDown().getType());
        auto &c = s.as<rt::steps::MoE>();
        c.intermediate = down.getDimSize(2);
        c.activation = static_cast<int32_t>(m.getActivation());
        c.inputQuant = actQuant(guDot ? nullptr : m.getInputQuantAttr());
        c.hiddenQuant = actQuant(downDot ? nullptr : m.getHiddenQuantAttr());
        c.inputRound = rounding(m.getInput());
        c.outputRound = rounding(m.getResult());
        if (auto gridRef = m.getExpertGridAttr()) {
          // This process's block of the experts.
          FailureOr<ProcessGrid::Block> block = blockOf(
              m, gridRef, *m.getExpertGridAxes(),
              getLogicalTensorType(m.getGateUp().getType()).getDimSize(0),
              "expert_grid_axes");
          if (failed(block))
            return failure();
          c.firstExpert = block->first;
          c.routedExperts = block->whole;
          c.allToAll = m.getAllToAll();
          c.gridAxes.assign(m.getExpertGridAxes()->begin(),
                            m.getExpertGridAxes()->end());
        }
        s.operands = {id(m.getInput()), id(m.getWeights()), id(m.getIndices())};
        s.results = {newValue(m.getResult(), Kind::Temp, -1,
                              like(m.getResult(), m.getInput()))};
        return success();
      })
      .Case([&](FusedElementwiseOp e) -> LogicalResult {
        FailureOr<std::string> sym = kernels.addElementwise(e);
        if (failed(sym))
          return failure();
        rt::Step &s = step(e, rt::steps::Elementwise{});
        s.kernel = *sym;
        // Each dynamic result dim comes from an input with that dim
        // (right-aligned) not broadcast.
        auto outType = cast<RankedTensorType>(e.getResult().getType());
        Dims shape;
        for (int64_t i = 0; i < outType.getRank(); ++i) {
          if (!outType.isDynamicDim(i)) {
            shape.push_back(rt::DimExpr::of(outType.getDimSize(i)));
            continue;
          }
          std::optional<rt::DimExpr> found;
          for (Value in : e.getInputs()) {
            auto t = cast<RankedTensorType>(in.getType());
            int64_t a = i - (outType.getRank() - t.getRank());
            if (a >= 0 && t.isDynamicDim(a)) {
              found = dim(in, a);
              break;
            }
          }
          if (!found)
            return e.emitError("cannot size the result of this kernel");
          shape.push_back(*found);
        }
        for (Value in : e.getInputs()) {
          if (!known(in))
            return e.emitError("the CPU backend needs run-time operands "
                               "here, not weights");
          s.operands.push_back(id(in));
          // Which axes the kernel broadcasts (a static 1 against a wider
          // dim): the executor checks run-time shapes against them.
          auto t = cast<RankedTensorType>(in.getType());
          int64_t offset = outType.getRank() - t.getRank();
          for (int64_t a = 0; a < t.getRank(); ++a)
            s.as<rt::steps::Elementwise>().broadcast.push_back(
                t.getDimSize(a) == 1 && outType.getDimSize(offset + a) != 1);
        }
        s.results = {newValue(e.getResult(), Kind::Temp, -1, shape)};
        return success();
      })
      .Case<shard::AllReduceOp, shard::AllGatherOp>(
          [&](Operation *o) -> LogicalResult {
            // A collective of every process of the plan (MPI's world), or
            // of this process's group along some axes of the grid (tp
            // inside a tp x ep grid), which the runtime splits off.
            auto gridOp = SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(
                o, o->getAttrOfType<FlatSymbolRefAttr>("grid"));
            ArrayRef<int16_t> axes =
                isa<shard::AllReduceOp>(o)
                    ? cast<shard::AllReduceOp>(o).getGridAxes()
                    : cast<shard::AllGatherOp>(o).getGridAxes();
            if (!gridOp)
              return o->emitError("a collective without its grid");
            ProcessGrid grid(gridOp.getShape());
            if (axes.empty() || !llvm::is_sorted(axes) ||
                std::adjacent_find(axes.begin(), axes.end()) != axes.end())
              return o->emitError("the CPU backend's collectives take one "
                                  "or more grid axes in ascending order");
            // Every axis: the plan's whole world (an empty list).
            std::vector<int64_t> gridAxes;
            if (static_cast<int64_t>(axes.size()) != gridOp.getRank())
              gridAxes.assign(axes.begin(), axes.end());
            Value in = o->getOperand(0), out = o->getResult(0);
            if (!known(in))
              return o->emitError("the CPU backend's collectives move "
                                  "activations only");
            if (auto r = dyn_cast<shard::AllReduceOp>(o)) {
              if (r.getReduction() != shard::ReductionKind::Sum)
                return o->emitError("the CPU backend's all_reduce sums");
              rt::Step &s = step(o, rt::steps::AllReduce{gridAxes});
              s.operands = {id(in)};
              s.results = {newValue(out, Kind::Temp, -1, like(out, in))};
              return success();
            }
            int64_t axis =
                cast<shard::AllGatherOp>(o).getGatherAxis().getSExtValue();
            int64_t processes = grid.sizeAlong(axes);
            Dims shape = like(out, in);
            if (getLogicalTensorType(out.getType()).isDynamicDim(axis))
              shape[axis].constant *= processes;
            rt::Step &s = step(o, rt::steps::AllGather{axis, gridAxes});
            s.operands = {id(in)};
            s.results = {newValue(out, Kind::Temp, -1, shape)};
            return success();
          })
      .Case<shard::SendOp, shard::RecvOp>([&](Operation *o) -> LogicalResult {
        // Pipeline stages: to / from a process of this one's group along
        // the axes, named by its index there (row-major).
        auto gridOp = SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(
            o, o->getAttrOfType<FlatSymbolRefAttr>("grid"));
        auto send = dyn_cast<shard::SendOp>(o);
        auto recv = dyn_cast<shard::RecvOp>(o);
        auto [axes, index] = pointToPointOf(o);
        if (!gridOp)
          return o->emitError("a send or receive without its grid");
        std::optional<int64_t> place =
            index && !axes.empty()
                ? ProcessGrid(gridOp.getShape()).placeAlong(axes, *index)
                : std::nullopt;
        if (!place)
          return o->emitError("the CPU backend sends and receives along "
                              "ascending grid axes to a static peer within "
                              "them");
        const int64_t peer = *place;
        std::vector<int64_t> gridAxes(axes.begin(), axes.end());
        if (send) {
          if (!known(send.getInput()))
            return o->emitError("the CPU backend sends activations only");
          rt::Step &s = step(o, rt::steps::Send{gridAxes, peer});
          s.operands = {id(send.getInput())};
          ids[send.getResult()] = id(send.getInput());
          return success();
        }
        // The received value's shape: its type's static dims, the dynamic
        // ones from the tensor.empty giving it.
        auto type = cast<RankedTensorType>(recv.getType());
        auto empty = recv.getInput().getDefiningOp<tensor::EmptyOp>();
        if (!empty)
          return o->emitError("the CPU backend receives into the shape of a "
                              "tensor.empty");
        Dims shape;
        unsigned dynamic = 0;
        for (int64_t d = 0; d < type.getRank(); ++d) {
          if (!type.isDynamicDim(d)) {
            shape.push_back(rt::DimExpr::of(type.getDimSize(d)));
            continue;
          }
          FailureOr<rt::DimExpr> size =
              indexValue(empty.getDynamicSizes()[dynamic++]);
          if (failed(size))
            return o->emitError("the received shape's dim ")
                   << d << " is not a dim of an argument";
          shape.push_back(*size);
        }
        rt::Step &s = step(o, rt::steps::Recv{gridAxes, peer});
        s.results = {newValue(recv.getResult(), Kind::Temp, -1, shape)};
        return success();
      })
      .Case([&](MoEOp m) -> LogicalResult {
        return m.emitError("the CPU backend runs ds.moe decomposed and "
                           "fused: run ds-optimize first");
      })
      .Default([&](Operation *o) {
        return o->emitError("the CPU backend has no lowering for '")
               << o->getName()
               << "' (run ds-optimize first: it fuses MoE blocks, routers "
                  "and elementwise chains into ops the backend runs)";
      });
}

} // namespace

FailureOr<PlanBuildResult> ds::buildPlan(ModuleOp module,
                                         const ds::Checkpoint &checkpoint,
                                         KernelModule &kernels,
                                         ArrayRef<std::string> functions,
                                         int64_t process) {
  PlanBuildResult result;
  WeightTable weights(checkpoint);
  // A partitioned module compiles to one process's plan, with its shards
  // of the weights.
  FailureOr<std::optional<ProcessGrid>> grid = ProcessGrid::of(module);
  if (failed(grid))
    return failure();
  int64_t processes = *grid ? (*grid)->size() : 1;
  if (process < 0 || process >= processes)
    return module.emitError()
           << "process " << process << " is not one of the module's "
           << processes << " processes";
  result.plan.processes = processes;
  result.plan.process = process;
  if (*grid)
    result.plan.grid.assign((*grid)->shape().begin(), (*grid)->shape().end());
  weights.setProcess(process);
  if (auto info = module->getAttrOfType<DictionaryAttr>("ds.model")) {
    if (auto a = info.getAs<StringAttr>("arch"))
      result.plan.arch = a.str();
    if (auto v = info.getAs<IntegerAttr>("vocab_size"))
      result.plan.vocabSize = v.getInt();
    if (auto m = info.getAs<IntegerAttr>("max_cache_len"))
      result.plan.maxCacheLen = m.getInt();
    if (auto eos = info.getAs<DenseI64ArrayAttr>("eos_token_ids"))
      result.plan.eosTokenIds.assign(eos.asArrayRef().begin(),
                                     eos.asArrayRef().end());
  }
  // Pipeline stages: a pipelined function compiles to this process's
  // stage, under the whole function's name; the stage functions are not
  // compiled by their own names.
  llvm::DenseMap<func::FuncOp, func::FuncOp> stageOf;
  llvm::DenseSet<func::FuncOp> stageFunctions;
  std::optional<int64_t> pipelineAxis;
  for (auto fn : module.getOps<func::FuncOp>()) {
    FailureOr<std::optional<PipelineStages>> stages = pipelineStagesOf(fn);
    if (failed(stages))
      return failure();
    if (!*stages)
      continue;
    SmallVector<int16_t> axis = {(*stages)->axis};
    if (!*grid || !(*grid)->hasAxes(axis) ||
        (*grid)->sizeAlong(axis) !=
            static_cast<int64_t>((*stages)->stages.size()))
      return fn.emitError("its pipeline stages are not one per process "
                          "along a grid axis");
    if (pipelineAxis && *pipelineAxis != (*stages)->axis)
      return fn.emitError("pipelined along another grid axis than the "
                          "other functions");
    pipelineAxis = (*stages)->axis;
    for (func::FuncOp s : (*stages)->stages)
      stageFunctions.insert(s);
    stageOf[fn] = (*stages)->stages[(*grid)->indexAlong(process, axis)];
  }
  if (pipelineAxis)
    result.plan.pipelineAxis = *pipelineAxis;
  auto wanted = [&](func::FuncOp fn) {
    return (!fn.isExternal() || stageOf.count(fn)) &&
           !stageFunctions.contains(fn) &&
           (functions.empty() ||
            llvm::is_contained(functions, fn.getSymName().str()));
  };
  int64_t ops = 0;
  auto body = [&](func::FuncOp fn) {
    return stageOf.count(fn) ? stageOf[fn] : fn;
  };
  for (auto fn : module.getOps<func::FuncOp>())
    if (wanted(fn))
      ops += static_cast<int64_t>(
                 body(fn).getBody().front().getOperations().size()) -
             1; // the terminator
  ds::Progress progress("ds-compile: ops planned, weights packed", ops);
  std::optional<std::vector<int64_t>> batchAxes;
  for (auto whole : module.getOps<func::FuncOp>()) {
    if (!wanted(whole))
      continue;
    func::FuncOp fn = body(whole);
    // Data parallelism splits the arguments along their batch: the plan
    // runs the process's replica's block of the sequences, and says over
    // which grid axes the replicas lie so its caller hands it that block.
    for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
      SmallVector<SmallVector<int16_t>> split = argumentSplitAxes(fn, i);
      if (split.empty() || split.front().empty())
        continue;
      std::vector<int64_t> axes(split.front().begin(), split.front().end());
      if (!batchAxes)
        batchAxes = axes;
      else if (*batchAxes != axes)
        return fn.emitError()
               << "argument " << i
               << " splits its batch over other grid axes than the other "
                  "arguments";
    }
    FunctionBuilder builder(fn, weights, kernels, result.plan.caches,
                            &progress);
    FailureOr<rt::FunctionPlan> plan = builder.build(whole.getSymName());
    if (failed(plan))
      return failure();
    result.plan.functions.push_back(std::move(*plan));
  }
  if (result.plan.functions.empty())
    return module.emitError("no function to compile");
  if (batchAxes)
    result.plan.batchAxes = std::move(*batchAxes);
  absl::Status spooled =
      weights.spoolError.ok() ? weights.data.status() : weights.spoolError;
  if (!spooled.ok())
    return module.emitError("ds-compile: the weights section: ")
           << spooled.message() << " (TMPDIR names where it is written)";
  result.plan.weights = std::move(weights.infos);
  result.weights = std::move(weights.data);
  return result;
}
