//===- Interpreter.cpp - the ds reference interpreter ---------------------===//
//
// One evaluation function per op, written from the op descriptions in
// DSOps.td (which follow Hugging Face transformers). Accumulations run in
// double so that the oracle is at least as accurate as what it checks.
//
//===----------------------------------------------------------------------===//

#include "ds/interpreter/Interpreter.h"
#include "ds/interpreter/Partitioned.h"

#include "ds/support/ReferenceKernels.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSQuant.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/TypeSwitch.h"

#include <thread>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

using namespace mlir;
using namespace ds;
using ds::DType;
using ds::HostTensor;

namespace {

//===----------------------------------------------------------------------===//
// Element helpers
//===----------------------------------------------------------------------===//

/// Quantizes `x` in place as `scheme` says and keeps the dequantized values
/// (what a GEMM on the quantized activation computes with).
void fakeQuantize(Tensor &x, ActQuantAttr scheme) {
  std::vector<int64_t> shape(x.shape.begin(), x.shape.end());
  ds::QScheme q;
  q.storage = *getQStorage(scheme.getStorageType());
  q.block.assign(shape.size(), scheme.isStatic() ? 0 : 1);
  if (!shape.empty())
    q.block.back() = scheme.getGroup();
  ds::QuantizedTensor t =
      scheme.isStatic()
          ? ds::quantizeWithScale(
                x.f.data(), shape, q,
                static_cast<float>(scheme.getScale().convertToDouble()))
          : ds::quantize(x.f.data(), shape, q);
  x.f = ds::dequantize(t);
}

float activate(Activation kind, float x) {
  switch (kind) {
  case Activation::silu:
    return x / (1.0f + std::exp(-x));
  case Activation::gelu:
    return 0.5f * x * (1.0f + std::erf(x / std::sqrt(2.0f)));
  case Activation::gelu_tanh: {
    const float c = std::sqrt(2.0f / static_cast<float>(M_PI));
    return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
  }
  case Activation::relu:
    return x > 0.0f ? x : 0.0f;
  case Activation::sigmoid:
    return 1.0f / (1.0f + std::exp(-x));
  }
  return x;
}

/// Product of dims [from, to).
int64_t product(ArrayRef<int64_t> shape, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t i = from; i < to; ++i)
    n *= shape[i];
  return n;
}

//===----------------------------------------------------------------------===//
// Kernels shared by ops (the composite ds.moe reuses the step kernels)
//===----------------------------------------------------------------------===//

/// `w * round(x * rsqrt(mean(x^2) + eps))` over the last axis, the normalized
/// value rounded to `store` as Hugging Face does.
Tensor rmsNormKernel(const Tensor &x, const Tensor &w, double eps,
                     DType store) {
  int64_t d = x.shape.back(), rows = x.numElements() / d;
  Tensor y = Tensor::floats(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < d; ++c)
      ss += static_cast<double>(x.f[r * d + c]) * x.f[r * d + c];
    float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
    for (int64_t c = 0; c < d; ++c)
      y.f[r * d + c] = w.f[c] * ds::roundToDType(x.f[r * d + c] * inv, store);
  }
  return y;
}

/// act(y[..., :N/2]) * y[..., N/2:] over the last axis.
Tensor gluKernel(const Tensor &y, Activation act) {
  int64_t n = y.shape.back(), half = n / 2, rows = y.numElements() / n;
  SmallVector<int64_t> shape = y.shape;
  shape.back() = half;
  Tensor g = Tensor::floats(shape);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < half; ++c)
      g.f[r * half + c] = activate(act, y.f[r * n + c]) * y.f[r * n + half + c];
  return g;
}

Tensor linearKernel(const Tensor &x, const Tensor &w, const Tensor *bias) {
  int64_t k = x.shape.back(), n = w.shape[0];
  int64_t rows = x.numElements() / k;
  SmallVector<int64_t> shape(x.shape.begin(), x.shape.end() - 1);
  shape.push_back(n);
  Tensor y = Tensor::floats(shape);
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = &x.f[r * k];
    for (int64_t j = 0; j < n; ++j) {
      const float *wj = &w.f[j * k];
      double acc = bias ? bias->f[j] : 0.0;
      for (int64_t c = 0; c < k; ++c)
        acc += static_cast<double>(xr[c]) * wj[c];
      y.f[r * n + j] = static_cast<float>(acc);
    }
  }
  return y;
}

struct Routing {
  Tensor weights; // [N, k] f32
  Tensor indices; // [N, k] i64
};

/// With `forced` ([N, k] indices, in kept-expert numbering), the selection
/// is taken from it and only the weights are computed.
Routing routerKernel(const Tensor &logits, const Tensor *bias,
                     RoutingAttr routing, const Tensor *forced = nullptr) {
  int64_t n = logits.shape[0], k = routing.getTopK();
  ds::reference::RouteSpec spec;
  spec.numExperts = logits.shape[1];
  spec.topK = k;
  spec.nGroup = routing.getNGroup();
  spec.topkGroup = routing.getTopkGroup();
  spec.sigmoid = routing.getScoring() == ScoringFunc::sigmoid;
  spec.groupScoreMax = routing.getGroupScore() == GroupScore::max;
  spec.normTopkProb = routing.getNormTopkProb();
  spec.normEpsilon = routing.getNormEpsilon().convertToDouble();
  spec.scalingFactor = routing.getRoutedScalingFactor().convertToDouble();
  spec.kept.assign(routing.getKept().begin(), routing.getKept().end());
  Routing out{Tensor::floats({n, k}), Tensor::ints({n, k})};
  std::vector<double> weights(n * k);
  ds::reference::route(logits.f.data(), bias ? bias->f.data() : nullptr, n,
                       spec, weights.data(), out.indices.i.data(),
                       forced ? forced->i.data() : nullptr);
  for (int64_t i = 0; i < n * k; ++i)
    out.weights.f[i] = static_cast<float>(weights[i]);
  return out;
}

struct Dispatch {
  Tensor sorted, offsets, rows;
};

Dispatch dispatchKernel(const Tensor &x, const Tensor &indices,
                        int64_t numExperts) {
  int64_t n = x.shape[0], h = x.shape[1], k = indices.shape[1];
  Dispatch d{Tensor::floats({n * k, h}), Tensor::ints({numExperts + 1}),
             Tensor::ints({n * k})};
  std::vector<int64_t> flat(n * k);
  std::iota(flat.begin(), flat.end(), 0);
  std::stable_sort(flat.begin(), flat.end(), [&](int64_t a, int64_t b) {
    return indices.i[a] < indices.i[b];
  });
  for (int64_t r = 0; r < n * k; ++r) {
    int64_t src = flat[r];
    d.rows.i[r] = src;
    std::copy_n(&x.f[(src / k) * h], h, &d.sorted.f[r * h]);
    d.offsets.i[indices.i[src] + 1] += 1;
  }
  for (int64_t e = 0; e < numExperts; ++e)
    d.offsets.i[e + 1] += d.offsets.i[e];
  return d;
}

Tensor groupedMatmulKernel(const Tensor &x, const Tensor &w,
                           const Tensor &offsets) {
  int64_t m = x.shape[0], kdim = x.shape[1];
  int64_t numExperts = w.shape[0], n = w.shape[1];
  Tensor y = Tensor::floats({m, n});
  for (int64_t e = 0; e < numExperts; ++e) {
    const float *we = &w.f[e * n * kdim];
    for (int64_t r = offsets.i[e]; r < offsets.i[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < kdim; ++c)
          acc += static_cast<double>(x.f[r * kdim + c]) * we[j * kdim + c];
        y.f[r * n + j] = static_cast<float>(acc);
      }
  }
  return y;
}

Tensor combineKernel(const Tensor &y, const Tensor &weights,
                     const Tensor &rows) {
  int64_t n = weights.shape[0], k = weights.shape[1], h = y.shape[1];
  std::vector<double> acc(n * h, 0.0);
  for (int64_t r = 0; r < y.shape[0]; ++r) {
    int64_t t = rows.i[r] / k;
    double w = weights.f[rows.i[r]];
    for (int64_t c = 0; c < h; ++c)
      acc[t * h + c] += w * y.f[r * h + c];
  }
  Tensor out = Tensor::floats({n, h});
  for (size_t i = 0; i < acc.size(); ++i)
    out.f[i] = static_cast<float>(acc[i]);
  return out;
}

using ds::reference::attendOne;

//===----------------------------------------------------------------------===//
// The evaluator
//===----------------------------------------------------------------------===//

/// One process of a partitioned run: its rank, the collectives it joins,
/// and the lock its loads of the shared weights take.
struct Process {
  int64_t rank;
  EmulatedCollectives *collectives;
  std::mutex *weightsLock;
};

class Evaluator {
public:
  Evaluator(Interpreter &interp, WeightProvider *weights,
            const Process *process = nullptr)
      : interp(interp), weights(weights), process(process) {}

  FailureOr<SmallVector<Tensor>> runFunction(func::FuncOp fn,
                                             ArrayRef<Tensor> args);

private:
  LogicalResult eval(Operation *op);
  const Tensor &get(Value v) {
    return values.find(v.getAsOpaquePointer())->second;
  }
  // Observers see whole values: a partitioned run's processes hold blocks,
  // on several threads, so they see nothing.
  void set(Value v, Tensor t) {
    roundToValueType(t, v);
    if (const ValueObserver &o = interp.getValueObserver(); o && !process)
      o(v, t);
    values[v.getAsOpaquePointer()] = std::move(t);
  }
  void observeGemmInput(Operation *op, Value weight, const Tensor &input) {
    if (const GemmInputObserver &o = interp.getGemmInputObserver();
        o && !process)
      o(op, weight, input);
  }
  LogicalResult evalParam(ParamOp p);
  LogicalResult evalCollective(Operation *op);
  /// shard.send / shard.recv between pipeline stages.
  LogicalResult evalSendRecv(Operation *op);
  LogicalResult checkPositions(Operation *op, const Tensor &positions,
                               int64_t limit, StringRef what);
  /// The router kernel, with the selection the interpreter's routing
  /// override imposes (if any).
  FailureOr<Routing> route(Operation *op, const Tensor &logits,
                           const Tensor *bias, RoutingAttr routing) {
    const Tensor *forced = nullptr;
    if (const RoutingOverride &o = interp.getRoutingOverride(); o && !process) {
      forced = o(op);
      int64_t k = routing.getTopK(), n = logits.shape[0];
      if (forced &&
          (forced->shape.size() != 2 || forced->shape[0] != n ||
           forced->shape[1] != k || llvm::any_of(forced->i, [&](int64_t i) {
             return i < 0 || i >= routing.getNumRoutedExperts();
           })))
        return op->emitError("the imposed routing does not fit this router");
    }
    Routing r = routerKernel(logits, bias, routing, forced);
    observe(op, r.indices, routing);
    // Placed experts: the indices number the weight slots.
    if (ArrayRef<int64_t> slots = routing.getSlots(); !slots.empty()) {
      const int64_t experts = routing.getNumRoutedExperts();
      std::vector<int64_t> first(experts + 1), list(slots.size());
      if (!ds::reference::placeOnSlots(r.indices.i.data(), r.indices.shape[0],
                                       routing.getTopK(), slots.data(),
                                       static_cast<int64_t>(slots.size()),
                                       experts, first.data(), list.data()))
        return op->emitError("the routing's slots do not place its experts");
    }
    return r;
  }
  void observe(Operation *op, const Tensor &indices, RoutingAttr routing) {
    if (const RoutingObserver &o = interp.getRoutingObserver(); o && !process)
      o(op, indices, routing.getNumRoutedExperts());
  }

  LogicalResult evalRope(RopeOp op);
  LogicalResult evalAttention(AttentionOp op);
  LogicalResult evalMLA(MLAAttentionOp op);
  LogicalResult evalMoE(MoEOp op);
  /// This process's block of `local` items (experts, vocabulary rows) of
  /// `op`, dealt over `axes` (its `what`) of the run's grid.
  FailureOr<ProcessGrid::Block> blockOf(Operation *op, ArrayRef<int16_t> axes,
                                        int64_t local, StringRef what);
  /// This process's block of `local` experts along `axes`, checked to make
  /// the routing's `routed` experts when given.
  FailureOr<ProcessGrid::Block> expertBlock(Operation *op,
                                            ArrayRef<int16_t> axes,
                                            int64_t local,
                                            std::optional<int64_t> routed);
  /// The dispatch of `x` to the `local` experts of `op`'s weights, of
  /// `routed` in all (none: the block's). With a block of the experts
  /// (`grid` set: expert parallelism), the slots routed to other
  /// processes' experts go to a last group that is then dropped, and the
  /// rest are numbered within the block.
  FailureOr<Dispatch> dispatchLocal(Operation *op, const Tensor &x,
                                    const Tensor &indices, int64_t local,
                                    std::optional<int64_t> routed,
                                    FlatSymbolRefAttr grid,
                                    std::optional<ArrayRef<int16_t>> axes);
  /// The routed experts of a MoE op with `all_to_all`: the slots of the
  /// local tokens `x` [n, H] (`indices` [n, k] numbering every process's
  /// experts, `local` of them per process along `axes`) travel to the
  /// processes holding their experts, `experts(sorted, offsets)` computes
  /// this process's experts' outputs over the rows it received (grouped
  /// by expert as dispatchKernel groups them), the outputs travel back, and
  /// each token adds its slots in ascending expert order with `weights`, as
  /// the whole layer's combineKernel does.
  FailureOr<Tensor>
  moeAllToAll(Operation *op, const Tensor &x, const Tensor &indices,
              const Tensor &weights, int64_t local,
              std::optional<int64_t> routed, ArrayRef<int16_t> axes,
              function_ref<Tensor(const Tensor &, const Tensor &)> experts);
  LogicalResult evalFusedLinear(FusedLinearOp op);
  LogicalResult evalFusedMoE(FusedMoEOp op);
  LogicalResult evalFusedElementwise(FusedElementwiseOp op);
  LogicalResult evalConcat(ValueRange inputs, int64_t axis, Value result);
  LogicalResult evalReshape(Operation *op, Value input, Value result,
                            ArrayRef<int64_t> shape);

  Interpreter &interp;
  WeightProvider *weights;
  const Process *process;
  /// Node-based so that references from get() survive later set() calls.
  std::unordered_map<const void *, Tensor> values;
};

LogicalResult Evaluator::checkPositions(Operation *op, const Tensor &positions,
                                        int64_t limit, StringRef what) {
  for (int64_t p : positions.i)
    if (p < 0 || p >= limit)
      return op->emitError() << "position " << p << " is outside the " << what
                             << " [0, " << limit << ")";
  return success();
}

LogicalResult Evaluator::evalRope(RopeOp op) {
  const Tensor &x = get(op.getInput());
  const Tensor &pos = get(op.getPositions());
  RopeAttr rope = op.getRope();
  int64_t tokens = pos.numElements();
  int64_t dFull = x.shape.back();
  int64_t heads = x.numElements() / (tokens * dFull);
  int64_t d = rope.getDim(), half = d / 2;
  SmallVector<float> invFreq = rope.computeInvFreq();
  float scaling = static_cast<float>(rope.getAttentionScaling());
  Tensor y = x;
  DType store = storageDType(expressedElementType(op.getInput()));
  std::vector<float> cosv(half), sinv(half);
  for (int64_t t = 0; t < tokens; ++t) {
    float p = static_cast<float>(pos.i[t]);
    for (int64_t j = 0; j < half; ++j) {
      float ang = p * invFreq[j];
      // HF builds cos/sin in f32, scales them, then casts to the input type.
      cosv[j] = ds::roundToDType(std::cos(ang) * scaling, store);
      sinv[j] = ds::roundToDType(std::sin(ang) * scaling, store);
    }
    for (int64_t h = 0; h < heads; ++h) {
      const float *in = &x.f[(t * heads + h) * dFull];
      float *out = &y.f[(t * heads + h) * dFull];
      for (int64_t j = 0; j < half; ++j) {
        float c = cosv[j], s = sinv[j];
        switch (rope.getStyle()) {
        case RopeStyle::rotate_half:
          out[j] = in[j] * c - in[j + half] * s;
          out[j + half] = in[j + half] * c + in[j] * s;
          break;
        case RopeStyle::interleaved:
          out[2 * j] = in[2 * j] * c - in[2 * j + 1] * s;
          out[2 * j + 1] = in[2 * j + 1] * c + in[2 * j] * s;
          break;
        case RopeStyle::deinterleave:
          out[j] = in[2 * j] * c - in[2 * j + 1] * s;
          out[j + half] = in[2 * j + 1] * c + in[2 * j] * s;
          break;
        }
      }
    }
  }
  set(op.getResult(), std::move(y));
  return success();
}

LogicalResult Evaluator::evalAttention(AttentionOp op) {
  const Tensor &q = get(op.getQ()), &k = get(op.getK()), &v = get(op.getV());
  const Tensor &pos = get(op.getPositions());
  int64_t b = q.shape[0], s = q.shape[1], hq = q.shape[2], d = q.shape[3];
  int64_t t = k.shape[1], hkv = k.shape[2], dv = v.shape[3];
  if (failed(checkPositions(op, pos, t, "key/value length")))
    return failure();
  int64_t window = op.getSlidingWindow() ? *op.getSlidingWindow() : 0;
  Tensor o = Tensor::floats({b, s, hq, dv});
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si)
      attendOne(
          &q.f[((bi * s + si) * hq) * d], hq, hkv, d, dv, pos.i[bi * s + si],
          window, op.getScale().convertToDouble(),
          [&](int64_t j, int64_t h) {
            return &k.f[((bi * t + j) * hkv + h) * d];
          },
          [&](int64_t j, int64_t h) {
            return &v.f[((bi * t + j) * hkv + h) * dv];
          },
          &o.f[((bi * s + si) * hq) * dv]);
  set(op.getResult(), std::move(o));
  return success();
}

LogicalResult Evaluator::evalMLA(MLAAttentionOp op) {
  const Tensor &qn = get(op.getQNope()), &qp = get(op.getQPe());
  const Tensor &ckv = get(op.getCKv()), &kpe = get(op.getKPe());
  const Tensor &kvb = get(op.getKvB()), &pos = get(op.getPositions());
  int64_t b = qn.shape[0], s = qn.shape[1], h = qn.shape[2], dn = qn.shape[3];
  int64_t dr = qp.shape[3], t = ckv.shape[1];
  int64_t dv = kvb.shape[0] / h - dn;
  if (failed(checkPositions(op, pos, t, "latent cache length")))
    return failure();
  // Expand the latent: kv = c_kv kv_bᵀ, rounded to the activation type
  // (q_nope's; a narrow latent cache does not narrow it) as the unabsorbed
  // HF path does; K = [k_nope, k_pe], V.
  Tensor kv = linearKernel(ckv, kvb, nullptr); // [B, T, H*(dn+dv)]
  roundToValueType(kv, op.getQNope());
  int64_t dk = dn + dr;
  std::vector<float> keys(b * t * h * dk), vals(b * t * h * dv);
  for (int64_t bt = 0; bt < b * t; ++bt)
    for (int64_t hi = 0; hi < h; ++hi) {
      const float *row = &kv.f[(bt * h + hi) * (dn + dv)];
      float *key = &keys[(bt * h + hi) * dk];
      std::copy_n(row, dn, key);
      std::copy_n(&kpe.f[bt * dr], dr, key + dn);
      std::copy_n(row + dn, dv, &vals[(bt * h + hi) * dv]);
    }
  std::vector<float> query(h * dk);
  Tensor o = Tensor::floats({b, s, h, dv});
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t si = 0; si < s; ++si) {
      for (int64_t hi = 0; hi < h; ++hi) {
        std::copy_n(&qn.f[((bi * s + si) * h + hi) * dn], dn, &query[hi * dk]);
        std::copy_n(&qp.f[((bi * s + si) * h + hi) * dr], dr,
                    &query[hi * dk + dn]);
      }
      attendOne(
          query.data(), h, h, dk, dv, pos.i[bi * s + si], 0,
          op.getScale().convertToDouble(),
          [&](int64_t j, int64_t hi) {
            return &keys[((bi * t + j) * h + hi) * dk];
          },
          [&](int64_t j, int64_t hi) {
            return &vals[((bi * t + j) * h + hi) * dv];
          },
          &o.f[((bi * s + si) * h) * dv]);
    }
  set(op.getResult(), std::move(o));
  return success();
}

FailureOr<ProcessGrid::Block> Evaluator::blockOf(Operation *op,
                                                 ArrayRef<int16_t> axes,
                                                 int64_t local,
                                                 StringRef what) {
  if (!process)
    return op->emitError("a block of ") << what << " runs in a partitioned run";
  std::optional<ProcessGrid::Block> block =
      process->collectives->getGrid().blockAlong(process->rank, axes, local);
  if (!block)
    return op->emitError() << what
                           << " grid axes are not ascending axes of the "
                              "run's grid";
  return *block;
}

FailureOr<ProcessGrid::Block>
Evaluator::expertBlock(Operation *op, ArrayRef<int16_t> axes, int64_t local,
                       std::optional<int64_t> routed) {
  FailureOr<ProcessGrid::Block> block = blockOf(op, axes, local, "the experts");
  if (failed(block))
    return failure();
  if (routed && *routed != block->whole)
    return op->emitError() << local << " experts on each of "
                           << block->whole / local
                           << " processes do not make the routing's "
                           << *routed;
  return block;
}

FailureOr<Dispatch>
Evaluator::dispatchLocal(Operation *op, const Tensor &x, const Tensor &indices,
                         int64_t local, std::optional<int64_t> routed,
                         FlatSymbolRefAttr grid,
                         std::optional<ArrayRef<int16_t>> axes) {
  Tensor idx = indices;
  if (grid) {
    FailureOr<ProcessGrid::Block> block = expertBlock(op, *axes, local, routed);
    if (failed(block))
      return failure();
    for (int64_t &e : idx.i) {
      if (e < 0 || e >= block->whole)
        return op->emitError() << "expert index " << e << " is outside [0, "
                               << block->whole << ")";
      e = (e >= block->first && e < block->first + local) ? e - block->first
                                                          : local;
    }
  } else if (routed && local != *routed) {
    return op->emitError() << "the expert weights hold " << local
                           << " experts, the routing " << *routed;
  } else {
    for (int64_t e : idx.i)
      if (e < 0 || e >= local)
        return op->emitError()
               << "expert index " << e << " is outside [0, " << local << ")";
  }
  Dispatch d = dispatchKernel(x, idx, local + (grid ? 1 : 0));
  if (grid) {
    const int64_t h = x.shape[1], kept = d.offsets.i[local];
    d.sorted.shape[0] = kept;
    d.sorted.f.resize(kept * h);
    d.rows.shape[0] = kept;
    d.rows.i.resize(kept);
    d.offsets.shape[0] = local + 1;
    d.offsets.i.resize(local + 1);
  }
  return d;
}

FailureOr<Tensor> Evaluator::moeAllToAll(
    Operation *op, const Tensor &x, const Tensor &indices,
    const Tensor &weights, int64_t local, std::optional<int64_t> routed,
    ArrayRef<int16_t> axes,
    function_ref<Tensor(const Tensor &, const Tensor &)> experts) {
  FailureOr<ProcessGrid::Block> block = expertBlock(op, axes, local, routed);
  if (failed(block))
    return failure();
  const int64_t n = x.shape[0], h = x.shape[1], k = indices.shape[1];
  const int64_t me = block->first / local;
  // One row per slot, in slot order: [its process, its expert there, x].
  Tensor out = Tensor::floats({n * k, h + 2});
  for (int64_t i = 0; i < n * k; ++i) {
    const int64_t e = indices.i[i];
    if (e < 0 || e >= block->whole)
      return op->emitError() << "expert index " << e << " is outside [0, "
                             << block->whole << ")";
    float *row = &out.f[i * (h + 2)];
    row[0] = static_cast<float>(e / local);
    row[1] = static_cast<float>(e % local);
    std::copy_n(&x.f[(i / k) * h], h, row + 2);
  }
  FailureOr<std::vector<Tensor>> sent =
      process->collectives->exchange(process->rank, axes, out);
  if (failed(sent))
    return op->emitError("another process of the partitioned run failed");
  // The rows for this process's experts, by source, then in slot order.
  std::vector<int64_t> source, expert;
  std::vector<float> rows;
  for (auto [q, t] : llvm::enumerate(*sent))
    for (int64_t r = 0; r < t.shape[0]; ++r) {
      const float *row = &t.f[r * (h + 2)];
      if (static_cast<int64_t>(row[0]) != me)
        continue;
      source.push_back(static_cast<int64_t>(q));
      expert.push_back(static_cast<int64_t>(row[1]));
      rows.insert(rows.end(), row + 2, row + 2 + h);
    }
  const int64_t m = static_cast<int64_t>(source.size());
  Tensor received = Tensor::floats({m, h});
  received.f = std::move(rows);
  Tensor receivedIdx = Tensor::ints({m, 1});
  receivedIdx.i = expert;
  Dispatch d = dispatchKernel(received, receivedIdx, local);
  Tensor down = experts(d.sorted, d.offsets);
  // Back to their sources in the order they came: [source, output].
  Tensor back = Tensor::floats({m, h + 1});
  for (int64_t r = 0; r < m; ++r) {
    const int64_t at = d.rows.i[r]; // the received row (k = 1)
    back.f[at * (h + 1)] = static_cast<float>(source[at]);
    std::copy_n(&down.f[r * h], h, &back.f[at * (h + 1) + 1]);
  }
  FailureOr<std::vector<Tensor>> returned =
      process->collectives->exchange(process->rank, axes, back);
  if (failed(returned))
    return op->emitError("another process of the partitioned run failed");
  // Process p returns this process's slots in the order they were sent.
  std::vector<int64_t> cursor(returned->size(), 0);
  Tensor slots = Tensor::floats({n * k, h});
  for (int64_t i = 0; i < n * k; ++i) {
    const int64_t p = indices.i[i] / local;
    const Tensor &t = (*returned)[p];
    int64_t &r = cursor[p];
    while (r < t.shape[0] && static_cast<int64_t>(t.f[r * (h + 1)]) != me)
      ++r;
    if (r == t.shape[0])
      return op->emitError("an expert's process returned too few rows");
    std::copy_n(&t.f[r * (h + 1) + 1], h, &slots.f[i * h]);
    ++r;
  }
  // Added as the whole layer adds them: slots sorted stably by expert.
  std::vector<int64_t> order(n * k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return indices.i[a] < indices.i[b];
  });
  Tensor sorted = Tensor::floats({n * k, h});
  Tensor sortedRows = Tensor::ints({n * k});
  for (int64_t r = 0; r < n * k; ++r) {
    sortedRows.i[r] = order[r];
    std::copy_n(&slots.f[order[r] * h], h, &sorted.f[r * h]);
  }
  return combineKernel(sorted, weights, sortedRows);
}

LogicalResult Evaluator::evalMoE(MoEOp op) {
  // Same kernels, same order as the decomposition, so ds.moe and its
  // decomposed form agree exactly.
  Tensor x = get(op.getInput());
  int64_t h = x.shape.back();
  SmallVector<int64_t> shape = x.shape;
  x.shape = {x.numElements() / h, h};
  Value in = op.getInput();
  Tensor logits = linearKernel(x, get(op.getRouterWeight()), nullptr);
  roundToValueType(logits, in);
  const Tensor *bias = op.getScoreBias() ? &get(op.getScoreBias()) : nullptr;
  RoutingAttr routing = op.getRouting();
  FailureOr<Routing> routed = route(op, logits, bias, routing);
  if (failed(routed))
    return failure();
  Routing &r = *routed;
  Activation act = op.getActivation();
  const int64_t local = get(op.getExpertGate()).shape[0];
  auto experts = [&](const Tensor &sorted, const Tensor &offsets) {
    Tensor g = groupedMatmulKernel(sorted, get(op.getExpertGate()), offsets);
    Tensor u = groupedMatmulKernel(sorted, get(op.getExpertUp()), offsets);
    roundToValueType(g, in);
    roundToValueType(u, in);
    for (size_t i = 0; i < g.f.size(); ++i)
      g.f[i] = activate(act, g.f[i]) * u.f[i];
    roundToValueType(g, in);
    Tensor down = groupedMatmulKernel(g, get(op.getExpertDown()), offsets);
    roundToValueType(down, in);
    return down;
  };
  Tensor y;
  if (op.getAllToAll()) {
    FailureOr<Tensor> exchanged =
        moeAllToAll(op, x, r.indices, r.weights, local, routing.getNumSlots(),
                    *op.getExpertGridAxes(), experts);
    if (failed(exchanged))
      return failure();
    y = std::move(*exchanged);
  } else {
    FailureOr<Dispatch> dispatched =
        dispatchLocal(op, x, r.indices, local, routing.getNumSlots(),
                      op.getExpertGridAttr(), op.getExpertGridAxes());
    if (failed(dispatched))
      return failure();
    Dispatch &d = *dispatched;
    y = combineKernel(experts(d.sorted, d.offsets), r.weights, d.rows);
  }
  roundToValueType(y, in);
  if (op.getSharedGate()) {
    Tensor sg = linearKernel(x, get(op.getSharedGate()), nullptr);
    Tensor su = linearKernel(x, get(op.getSharedUp()), nullptr);
    roundToValueType(sg, in);
    roundToValueType(su, in);
    for (size_t i = 0; i < sg.f.size(); ++i)
      sg.f[i] = activate(act, sg.f[i]) * su.f[i];
    roundToValueType(sg, in);
    Tensor shared = linearKernel(sg, get(op.getSharedDown()), nullptr);
    roundToValueType(shared, in);
    if (op.getSharedExpertGate()) {
      Tensor gl = linearKernel(x, get(op.getSharedExpertGate()), nullptr);
      roundToValueType(gl, in);
      for (int64_t t = 0; t < x.shape[0]; ++t) {
        float gate = ds::roundToDType(activate(Activation::sigmoid, gl.f[t]),
                                      storageDType(expressedElementType(in)));
        for (int64_t c = 0; c < h; ++c)
          shared.f[t * h + c] *= gate;
      }
      roundToValueType(shared, in);
    }
    for (size_t i = 0; i < y.f.size(); ++i)
      y.f[i] += shared.f[i];
  }
  y.shape = shape;
  set(op.getResult(), std::move(y));
  return success();
}

LogicalResult Evaluator::evalFusedLinear(FusedLinearOp op) {
  Value in = op.getInput();
  Tensor x = get(in);
  if (op.getNormWeight()) {
    x = rmsNormKernel(x, get(op.getNormWeight()),
                      op.getNormEpsilon()->convertToDouble(),
                      storageDType(expressedElementType(in)));
    // ds.rms_norm's result is stored in the input type.
    roundToValueType(x, in);
  }
  observeGemmInput(op, op.getWeight(), x);
  if (ActQuantAttr quant = op.getInputQuantAttr())
    fakeQuantize(x, quant);
  const Tensor *bias = op.getBias() ? &get(op.getBias()) : nullptr;
  Tensor y = linearKernel(x, get(op.getWeight()), bias);
  std::optional<Activation> act;
  if (op.getActivation())
    act = *op.getActivation();
  if (op.getGated()) {
    roundToValueType(y, op.getResult());
    y = gluKernel(y, *act);
  } else if (act) {
    roundToValueType(y, op.getResult());
    for (float &v : y.f)
      v = activate(*act, v);
  }
  if (op.getResidual()) {
    roundToValueType(y, op.getResult());
    const Tensor &r = get(op.getResidual());
    for (size_t i = 0; i < y.f.size(); ++i)
      y.f[i] = r.f[i] + y.f[i];
  }
  set(op.getResult(), std::move(y));
  return success();
}

LogicalResult Evaluator::evalFusedMoE(FusedMoEOp op) {
  const Tensor &x = get(op.getInput()), &idx = get(op.getIndices());
  const Tensor &gateUp = get(op.getGateUp());
  Value in = op.getInput();
  auto experts = [&](const Tensor &sorted, const Tensor &offsets) {
    Tensor rows = sorted;
    if (ActQuantAttr quant = op.getInputQuantAttr())
      fakeQuantize(rows, quant);
    Tensor gu = groupedMatmulKernel(rows, gateUp, offsets);
    roundToValueType(gu, in);
    Tensor h = gluKernel(gu, op.getActivation());
    roundToValueType(h, in);
    if (ActQuantAttr quant = op.getHiddenQuantAttr())
      fakeQuantize(h, quant);
    Tensor down = groupedMatmulKernel(h, get(op.getDown()), offsets);
    roundToValueType(down, in);
    return down;
  };
  if (op.getAllToAll()) {
    FailureOr<Tensor> y =
        moeAllToAll(op, x, idx, get(op.getWeights()), gateUp.shape[0],
                    std::nullopt, *op.getExpertGridAxes(), experts);
    if (failed(y))
      return failure();
    set(op.getResult(), std::move(*y));
    return success();
  }
  // The experts of a block are numbered with the other processes' too.
  FailureOr<Dispatch> dispatched =
      dispatchLocal(op, x, idx, gateUp.shape[0], std::nullopt,
                    op.getExpertGridAttr(), op.getExpertGridAxes());
  if (failed(dispatched))
    return failure();
  Dispatch &d = *dispatched;
  set(op.getResult(), combineKernel(experts(d.sorted, d.offsets),
                                    get(op.getWeights()), d.rows));
  return success();
}

/// A ds.fused_elementwise body as straight-line scalar code over slots
/// (inputs first, then one slot per op result).
struct ScalarProgram {
  enum Kind {
    Const,
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Neg,
    Cast,
    Exp,
    Erf,
    Tanh,
    Sqrt,
    Rsqrt,
    Log,
    Abs
  };
  struct Inst {
    Kind kind;
    int a = 0, b = 0, out = 0;
    DType round = DType::F32;
    float constant = 0.0f;
  };
  std::vector<Inst> insts;
  int numSlots = 0, result = 0;

  static FailureOr<ScalarProgram> compile(FusedElementwiseOp op) {
    ScalarProgram p;
    llvm::DenseMap<Value, int> slot;
    Block &body = op.getBody().front();
    for (BlockArgument arg : body.getArguments())
      slot[arg] = p.numSlots++;
    for (Operation &o : body.without_terminator()) {
      Inst inst;
      auto kind = llvm::TypeSwitch<Operation *, std::optional<Kind>>(&o)
                      .Case([](arith::ConstantOp) { return Const; })
                      .Case([](arith::AddFOp) { return Add; })
                      .Case([](arith::SubFOp) { return Sub; })
                      .Case([](arith::MulFOp) { return Mul; })
                      .Case([](arith::DivFOp) { return Div; })
                      .Case<arith::MaximumFOp, arith::MaxNumFOp>(
                          [](Operation *) { return Max; })
                      .Case<arith::MinimumFOp, arith::MinNumFOp>(
                          [](Operation *) { return Min; })
                      .Case([](arith::NegFOp) { return Neg; })
                      .Case<arith::ExtFOp, arith::TruncFOp>(
                          [](Operation *) { return Cast; })
                      .Case([](math::ExpOp) { return Exp; })
                      .Case([](math::ErfOp) { return Erf; })
                      .Case([](math::TanhOp) { return Tanh; })
                      .Case([](math::SqrtOp) { return Sqrt; })
                      .Case([](math::RsqrtOp) { return Rsqrt; })
                      .Case([](math::LogOp) { return Log; })
                      .Case([](math::AbsFOp) { return Abs; })
                      .Default([](Operation *) { return std::nullopt; });
      if (!kind || o.getNumResults() != 1)
        return o.emitError() << "the ds interpreter does not evaluate '"
                             << o.getName() << "' in a ds.fused_elementwise";
      inst.kind = *kind;
      if (inst.kind == Const) {
        auto value = dyn_cast<FloatAttr>(cast<arith::ConstantOp>(o).getValue());
        if (!value)
          return o.emitError("a ds.fused_elementwise constant must be a float");
        inst.constant = static_cast<float>(value.getValueAsDouble());
      }
      if (o.getNumOperands() >= 1)
        inst.a = slot.lookup(o.getOperand(0));
      if (o.getNumOperands() >= 2)
        inst.b = slot.lookup(o.getOperand(1));
      inst.round = storageDType(o.getResult(0).getType());
      inst.out = slot[o.getResult(0)] = p.numSlots++;
      p.insts.push_back(inst);
    }
    p.result = slot.lookup(cast<YieldOp>(body.back()).getValue());
    return p;
  }

  float run(std::vector<float> &v) const {
    for (const Inst &i : insts) {
      float a = v[i.a], b = v[i.b], r = 0.0f;
      switch (i.kind) {
      case Const:
        r = i.constant;
        break;
      case Add:
        r = a + b;
        break;
      case Sub:
        r = a - b;
        break;
      case Mul:
        r = a * b;
        break;
      case Div:
        r = a / b;
        break;
      case Max:
        r = std::max(a, b);
        break;
      case Min:
        r = std::min(a, b);
        break;
      case Neg:
        r = -a;
        break;
      case Cast:
        r = a;
        break;
      case Exp:
        r = std::exp(a);
        break;
      case Erf:
        r = std::erf(a);
        break;
      case Tanh:
        r = std::tanh(a);
        break;
      case Sqrt:
        r = std::sqrt(a);
        break;
      case Rsqrt:
        r = 1.0f / std::sqrt(a);
        break;
      case Log:
        r = std::log(a);
        break;
      case Abs:
        r = std::fabs(a);
        break;
      }
      v[i.out] = i.round == DType::F32 ? r : ds::roundToDType(r, i.round);
    }
    return v[result];
  }
};

LogicalResult Evaluator::evalFusedElementwise(FusedElementwiseOp op) {
  FailureOr<ScalarProgram> program = ScalarProgram::compile(op);
  if (failed(program))
    return failure();
  SmallVector<const Tensor *> inputs;
  for (Value v : op.getInputs())
    inputs.push_back(&get(v));
  auto resultType = cast<RankedTensorType>(op.getType());
  size_t rank = resultType.getRank();
  // Size-1 axes broadcast; any other size (0 included) is the result's.
  SmallVector<int64_t> shape(rank, 1);
  for (const Tensor *t : inputs)
    for (size_t d = 0; d < rank; ++d) {
      if (t->shape[d] == 1)
        continue;
      if (shape[d] != 1 && t->shape[d] != shape[d])
        return op.emitError()
               << "inputs disagree on dimension " << d
               << " at run time: " << t->shape[d] << " vs " << shape[d];
      shape[d] = t->shape[d];
    }
  for (size_t d = 0; d < rank; ++d)
    if (!resultType.isDynamicDim(d) && resultType.getDimSize(d) != shape[d])
      return op.emitError()
             << "result dimension " << d << " is " << resultType.getDimSize(d)
             << " but the inputs give " << shape[d];
  Tensor out = Tensor::floats(shape);
  std::vector<float> slots(program->numSlots);
  SmallVector<int64_t> idx(rank, 0);
  for (int64_t flat = 0; flat < out.numElements(); ++flat) {
    for (auto [i, t] : llvm::enumerate(inputs)) {
      int64_t at = 0;
      for (size_t d = 0; d < rank; ++d)
        at = at * t->shape[d] + (t->shape[d] == 1 ? 0 : idx[d]);
      slots[i] = t->f[at];
    }
    out.f[flat] = program->run(slots);
    for (size_t d = rank; d-- > 0;) {
      if (++idx[d] < shape[d])
        break;
      idx[d] = 0;
    }
  }
  set(op.getResult(), std::move(out));
  return success();
}

LogicalResult Evaluator::evalConcat(ValueRange inputs, int64_t axis,
                                    Value result) {
  SmallVector<const Tensor *> parts;
  for (Value in : inputs)
    parts.push_back(&get(in));
  set(result, concatenate(parts, axis));
  return success();
}

LogicalResult Evaluator::evalReshape(Operation *op, Value input, Value result,
                                     ArrayRef<int64_t> shape) {
  Tensor t = get(input);
  if (product(shape, 0, shape.size()) != t.numElements())
    return op->emitError() << "reshape to a different element count";
  t.shape.assign(shape.begin(), shape.end());
  set(result, std::move(t));
  return success();
}

LogicalResult Evaluator::evalParam(ParamOp p) {
  if (!weights)
    return p.emitError("no weights were given for ds.param");
  if (!p.isSharded()) {
    std::unique_lock<std::mutex> lock;
    if (process)
      lock = std::unique_lock<std::mutex>(*process->weightsLock);
    FailureOr<Tensor> t = weights->load(p);
    if (failed(t))
      return failure();
    set(p.getResult(), std::move(*t));
    return success();
  }
  if (!process)
    return p.emitError("a sharded weight is one process's: run the "
                       "partitioned module's functions with Interpreter::run");
  FailureOr<Tensor> t;
  {
    std::lock_guard<std::mutex> lock(*process->weightsLock);
    t = loadShard(p, process->rank,
                  [&](ParamOp whole) { return weights->load(whole); });
  }
  if (failed(t))
    return failure();
  set(p.getResult(), std::move(*t));
  return success();
}

LogicalResult Evaluator::evalCollective(Operation *op) {
  if (!process)
    return op->emitError("a collective runs in a partitioned run: call the "
                         "partitioned module's functions with "
                         "Interpreter::run");
  const ProcessGrid &grid = process->collectives->getGrid();
  const Tensor &mine = get(op->getOperand(0));
  auto axesOf = [](Operation *o) -> ArrayRef<int16_t> {
    if (auto r = dyn_cast<shard::AllReduceOp>(o))
      return r.getGridAxes();
    if (auto g = dyn_cast<shard::AllGatherOp>(o))
      return g.getGridAxes();
    return cast<shard::AllSliceOp>(o).getGridAxes();
  };
  ArrayRef<int16_t> axes = axesOf(op);
  if (auto slice = dyn_cast<shard::AllSliceOp>(op)) {
    // Local: this process keeps its part of the axis.
    int64_t axis = slice.getSliceAxis().getSExtValue();
    SmallVector<SmallVector<int16_t>> split(axis + 1);
    split[axis].assign(axes.begin(), axes.end());
    if (mine.shape[axis] % grid.sizeAlong(axes) != 0)
      return op->emitError() << "dimension " << axis << " (" << mine.shape[axis]
                             << ") does not split evenly over "
                             << grid.sizeAlong(axes) << " processes";
    set(op->getResult(0), grid.block(mine, split, process->rank));
    return success();
  }
  FailureOr<std::vector<Tensor>> all =
      process->collectives->exchange(process->rank, axes, mine);
  if (failed(all))
    return op->emitError("another process of the partitioned run failed");
  for (const Tensor &t : *all)
    if (t.shape != mine.shape)
      return op->emitError("the processes' operands have different shapes");
  if (auto reduce = dyn_cast<shard::AllReduceOp>(op)) {
    if (mine.isInt)
      return op->emitError("all_reduce of integers is not supported");
    // In process order, so every process computes the same bits.
    Tensor out = (*all)[0];
    for (const Tensor &t : llvm::drop_begin(*all))
      for (size_t i = 0; i < out.f.size(); ++i)
        switch (reduce.getReduction()) {
        case shard::ReductionKind::Sum:
          out.f[i] += t.f[i];
          break;
        case shard::ReductionKind::Max:
          out.f[i] = std::max(out.f[i], t.f[i]);
          break;
        case shard::ReductionKind::Min:
          out.f[i] = std::min(out.f[i], t.f[i]);
          break;
        default:
          return op->emitError("the interpreter's all_reduce supports sum, "
                               "max and min");
        }
    set(op->getResult(0), std::move(out));
    return success();
  }
  // The group's blocks in order along the gather axis.
  SmallVector<const Tensor *> parts;
  for (const Tensor &t : *all)
    parts.push_back(&t);
  set(op->getResult(0),
      concatenate(parts,
                  cast<shard::AllGatherOp>(op).getGatherAxis().getSExtValue()));
  return success();
}

LogicalResult Evaluator::evalSendRecv(Operation *op) {
  if (!process)
    return op->emitError("a send or receive runs in a partitioned run: call "
                         "the partitioned module's functions with "
                         "Interpreter::run");
  auto send = dyn_cast<shard::SendOp>(op);
  auto recv = dyn_cast<shard::RecvOp>(op);
  auto [axes, peerIndex] = pointToPointOf(op);
  const ProcessGrid &grid = process->collectives->getGrid();
  // The peer's place in this process's group along the axes.
  std::optional<int64_t> place =
      peerIndex ? grid.placeAlong(axes, *peerIndex) : std::nullopt;
  if (!place)
    return op->emitError("needs a static peer index within ascending grid "
                         "axes of the run's grid");
  const int64_t peer = grid.group(process->rank, axes)[*place];
  const Tensor &mine = get(op->getOperand(0));
  if (send) {
    if (failed(process->collectives->send(process->rank, peer, mine)))
      return op->emitError("another process of the partitioned run failed");
    set(send.getResult(), mine);
    return success();
  }
  FailureOr<Tensor> in = process->collectives->recv(peer, process->rank);
  if (failed(in))
    return op->emitError("another process of the partitioned run failed");
  if (in->shape != mine.shape || in->isInt != mine.isInt)
    return op->emitError() << "received a tensor of another shape or type "
                              "than its operand's from process "
                           << peer;
  set(recv.getResult(), std::move(*in));
  return success();
}

LogicalResult Evaluator::eval(Operation *op) {
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](ParamOp p) { return evalParam(p); })
      .Case<shard::AllReduceOp, shard::AllGatherOp, shard::AllSliceOp>(
          [&](Operation *c) { return evalCollective(c); })
      .Case<shard::SendOp, shard::RecvOp>(
          [&](Operation *c) { return evalSendRecv(c); })
      .Case([&](tensor::EmptyOp e) -> LogicalResult {
        // Zeros of the shape (only a receive's shape reads it).
        RankedTensorType type = e.getType();
        SmallVector<int64_t> shape;
        unsigned dynamic = 0;
        for (int64_t d : type.getShape())
          shape.push_back(ShapedType::isDynamic(d)
                              ? get(e.getDynamicSizes()[dynamic++]).i[0]
                              : d);
        bool isInt = isa<IntegerType, IndexType>(type.getElementType());
        set(e.getResult(), isInt ? Tensor::ints(shape) : Tensor::floats(shape));
        return success();
      })
      .Case([&](EmbeddingOp e) -> LogicalResult {
        const Tensor &table = get(e.getTable()), &ids = get(e.getIds());
        int64_t rows = table.shape[0], h = table.shape[1];
        // A block of the vocabulary (vocabulary-split embedding): rows
        // [first, first + rows) of the whole table's v; other ids give
        // zeros.
        int64_t first = 0, v = rows;
        if (e.getVocabGridAttr()) {
          FailureOr<ProcessGrid::Block> block =
              blockOf(e, *e.getVocabGridAxes(), rows, "the vocabulary");
          if (failed(block))
            return failure();
          first = block->first;
          v = block->whole;
        }
        SmallVector<int64_t> shape = ids.shape;
        shape.push_back(h);
        Tensor out = Tensor::floats(shape);
        for (int64_t i = 0; i < ids.numElements(); ++i) {
          int64_t id = ids.i[i];
          if (id < 0 || id >= v)
            return e.emitError()
                   << "token id " << id << " is outside the vocabulary [0, "
                   << v << ")";
          if (id >= first && id < first + rows)
            std::copy_n(&table.f[(id - first) * h], h, &out.f[i * h]);
        }
        set(e.getResult(), std::move(out));
        return success();
      })
      .Case([&](RMSNormOp n) -> LogicalResult {
        set(n.getResult(),
            rmsNormKernel(get(n.getInput()), get(n.getWeight()),
                          n.getEpsilon().convertToDouble(),
                          storageDType(expressedElementType(n.getInput()))));
        return success();
      })
      .Case([&](LinearOp l) -> LogicalResult {
        observeGemmInput(l, l.getWeight(), get(l.getInput()));
        const Tensor *bias = l.getBias() ? &get(l.getBias()) : nullptr;
        set(l.getResult(),
            linearKernel(get(l.getInput()), get(l.getWeight()), bias));
        return success();
      })
      .Case<arith::TruncFOp, arith::ExtFOp>([&](Operation *c) {
        // set() rounds to the result type.
        set(c->getResult(0), get(c->getOperand(0)));
        return success();
      })
      .Case([&](QuantizeOp q) -> LogicalResult {
        Tensor x = get(q.getInput());
        fakeQuantize(x, q.getScheme());
        set(q.getResult(), std::move(x));
        return success();
      })
      .Case([&](DequantizeOp d) -> LogicalResult {
        set(d.getResult(), get(d.getInput()));
        return success();
      })
      .Case([&](SwiGLUOp s) -> LogicalResult {
        Tensor g = get(s.getGate());
        const Tensor &u = get(s.getUp());
        for (size_t i = 0; i < g.f.size(); ++i)
          g.f[i] = activate(s.getActivation(), g.f[i]) * u.f[i];
        set(s.getResult(), std::move(g));
        return success();
      })
      .Case([&](ActivationOp a) -> LogicalResult {
        Tensor x = get(a.getInput());
        for (float &v : x.f)
          v = activate(a.getKind(), v);
        set(a.getResult(), std::move(x));
        return success();
      })
      .Case([&](MulOp m) -> LogicalResult {
        const Tensor &a = get(m.getLhs()), &b = get(m.getRhs());
        size_t rank = a.shape.size();
        SmallVector<int64_t> shape(rank);
        for (size_t i = 0; i < rank; ++i) {
          if (a.shape[i] != b.shape[i] && a.shape[i] != 1 && b.shape[i] != 1)
            return m.emitError()
                   << "dimension " << i << " cannot broadcast: " << a.shape[i]
                   << " vs " << b.shape[i];
          shape[i] = a.shape[i] == 1 ? b.shape[i] : a.shape[i];
        }
        Tensor out = Tensor::floats(shape);
        SmallVector<int64_t> idx(rank, 0);
        for (int64_t flat = 0; flat < out.numElements(); ++flat) {
          int64_t rem = flat, ia = 0, ib = 0;
          for (size_t d = rank; d-- > 0;) {
            idx[d] = rem % shape[d];
            rem /= shape[d];
          }
          for (size_t d = 0; d < rank; ++d) {
            ia = ia * a.shape[d] + (a.shape[d] == 1 ? 0 : idx[d]);
            ib = ib * b.shape[d] + (b.shape[d] == 1 ? 0 : idx[d]);
          }
          out.f[flat] = a.f[ia] * b.f[ib];
        }
        set(m.getResult(), std::move(out));
        return success();
      })
      .Case([&](SplitHeadsOp s) -> LogicalResult {
        SmallVector<int64_t> shape = get(s.getInput()).shape;
        int64_t last = shape.pop_back_val(), heads = s.getNumHeads();
        shape.push_back(heads);
        shape.push_back(last / heads);
        return evalReshape(s, s.getInput(), s.getResult(), shape);
      })
      .Case([&](MergeHeadsOp m) -> LogicalResult {
        SmallVector<int64_t> shape = get(m.getInput()).shape;
        int64_t d = shape.pop_back_val(), heads = shape.pop_back_val();
        shape.push_back(heads * d);
        return evalReshape(m, m.getInput(), m.getResult(), shape);
      })
      .Case([&](SplitOp s) -> LogicalResult {
        const Tensor &x = get(s.getInput());
        int64_t axis = s.getAxis();
        int64_t outer = product(x.shape, 0, axis);
        int64_t inner = product(x.shape, axis + 1, x.shape.size());
        int64_t dim = x.shape[axis], offset = 0;
        int64_t total = std::accumulate(s.getSizes().begin(),
                                        s.getSizes().end(), int64_t(0));
        if (total != dim)
          return s.emitError()
                 << "sizes add up to " << total << " but the axis has " << dim;
        for (auto [size, result] : llvm::zip(s.getSizes(), s.getResults())) {
          SmallVector<int64_t> shape = x.shape;
          shape[axis] = size;
          Tensor piece = x.isInt ? Tensor::ints(shape) : Tensor::floats(shape);
          for (int64_t o = 0; o < outer; ++o)
            for (int64_t a = 0; a < size; ++a)
              for (int64_t c = 0; c < inner; ++c) {
                int64_t src = (o * dim + offset + a) * inner + c;
                int64_t dst = (o * size + a) * inner + c;
                if (x.isInt)
                  piece.i[dst] = x.i[src];
                else
                  piece.f[dst] = x.f[src];
              }
          offset += size;
          set(result, std::move(piece));
        }
        return success();
      })
      .Case([&](RopeOp r) { return evalRope(r); })
      .Case([&](AttentionOp a) { return evalAttention(a); })
      .Case([&](MLAAttentionOp m) { return evalMLA(m); })
      .Case([&](CacheUpdateOp c) -> LogicalResult {
        Tensor cache = get(c.getCache());
        const Tensor &upd = get(c.getUpdate()), &pos = get(c.getPositions());
        int64_t b = upd.shape[0], s = upd.shape[1], tmax = cache.shape[1];
        if (cache.shape[0] != b)
          return c.emitError() << "cache batch " << cache.shape[0]
                               << " differs from the update's " << b;
        if (failed(checkPositions(c, pos, tmax, "cache")))
          return failure();
        int64_t row = product(cache.shape, 2, cache.shape.size());
        for (int64_t bi = 0; bi < b; ++bi)
          for (int64_t si = 0; si < s; ++si)
            std::copy_n(&upd.f[(bi * s + si) * row], row,
                        &cache.f[(bi * tmax + pos.i[bi * s + si]) * row]);
        set(c.getResult(), std::move(cache));
        return success();
      })
      .Case([&](RouterOp r) -> LogicalResult {
        if (get(r.getLogits()).shape[1] != r.getRouting().getNumExperts())
          return r.emitError() << "logits have " << get(r.getLogits()).shape[1]
                               << " columns at run time, the routing has "
                               << r.getRouting().getNumExperts() << " experts";
        const Tensor *bias = r.getBias() ? &get(r.getBias()) : nullptr;
        FailureOr<Routing> routed =
            route(r, get(r.getLogits()), bias, r.getRouting());
        if (failed(routed))
          return failure();
        Routing &out = *routed;
        set(r.getWeights(), std::move(out.weights));
        set(r.getIndices(), std::move(out.indices));
        return success();
      })
      .Case([&](MoEDispatchOp d) -> LogicalResult {
        const Tensor &idx = get(d.getIndices());
        int64_t e = d.getNumExperts();
        for (int64_t v : idx.i)
          if (v < 0 || v >= e)
            return d.emitError()
                   << "expert index " << v << " is outside [0, " << e << ")";
        Dispatch out = dispatchKernel(get(d.getInput()), idx, e);
        set(d.getSorted(), std::move(out.sorted));
        set(d.getOffsets(), std::move(out.offsets));
        set(d.getRows(), std::move(out.rows));
        return success();
      })
      .Case([&](GroupedMatmulOp g) -> LogicalResult {
        const Tensor &x = get(g.getInput()), &off = get(g.getOffsets());
        const Tensor &w = get(g.getWeight());
        if (static_cast<int64_t>(off.i.size()) != w.shape[0] + 1 ||
            x.shape[1] != w.shape[2])
          return g.emitError("offsets or input width do not match the expert "
                             "weights at run time");
        int64_t prev = 0;
        for (int64_t v : off.i) {
          if (v < prev || v > x.shape[0])
            return g.emitError("offsets must be non-decreasing and within "
                               "the rows");
          prev = v;
        }
        if (off.i.front() != 0 || off.i.back() != x.shape[0])
          return g.emitError("offsets must start at 0 and end at the row "
                             "count");
        set(g.getResult(), groupedMatmulKernel(x, get(g.getWeight()), off));
        return success();
      })
      .Case([&](MoECombineOp c) -> LogicalResult {
        const Tensor &w = get(c.getWeights()), &rows = get(c.getRows());
        if (rows.shape[0] != get(c.getExpertOut()).shape[0] ||
            rows.shape[0] != w.numElements())
          return c.emitError("rows, expert outputs and weights disagree at run "
                             "time");
        for (int64_t r : rows.i)
          if (r < 0 || r >= w.numElements())
            return c.emitError() << "row index " << r << " is outside [0, "
                                 << w.numElements() << ")";
        set(c.getResult(), combineKernel(get(c.getExpertOut()), w, rows));
        return success();
      })
      .Case([&](MoEOp m) { return evalMoE(m); })
      .Case([&](FusedLinearOp l) { return evalFusedLinear(l); })
      .Case([&](FusedRouterOp r) -> LogicalResult {
        // Logits in f32, as DeepSeek's router computes them.
        Tensor logits =
            linearKernel(get(r.getInput()), get(r.getWeight()), nullptr);
        const Tensor *bias = r.getBias() ? &get(r.getBias()) : nullptr;
        FailureOr<Routing> routed = route(r, logits, bias, r.getRouting());
        if (failed(routed))
          return failure();
        Routing &out = *routed;
        set(r.getWeights(), std::move(out.weights));
        set(r.getIndices(), std::move(out.indices));
        return success();
      })
      .Case([&](FusedMoEOp m) { return evalFusedMoE(m); })
      .Case([&](FusedElementwiseOp e) { return evalFusedElementwise(e); })
      // Upstream ops that ds IR uses.
      .Case([&](arith::ConstantOp c) -> LogicalResult {
        Attribute value = c.getValue();
        if (auto i = dyn_cast<IntegerAttr>(value)) {
          Tensor t = Tensor::ints({});
          t.i[0] = i.getValue().getSExtValue();
          set(c.getResult(), std::move(t));
          return success();
        }
        if (auto fl = dyn_cast<FloatAttr>(value)) {
          Tensor t = Tensor::floats({});
          t.f[0] = static_cast<float>(fl.getValueAsDouble());
          set(c.getResult(), std::move(t));
          return success();
        }
        auto dense = dyn_cast<DenseElementsAttr>(value);
        if (!dense)
          return c.emitError("unsupported constant");
        auto type = cast<ShapedType>(dense.getType());
        if (isa<FloatType>(type.getElementType())) {
          Tensor t = Tensor::floats(type.getShape());
          int64_t n = 0;
          for (APFloat v : dense.getValues<APFloat>())
            t.f[n++] = static_cast<float>(v.convertToDouble());
          set(c.getResult(), std::move(t));
        } else {
          Tensor t = Tensor::ints(type.getShape());
          int64_t n = 0;
          for (APInt v : dense.getValues<APInt>())
            t.i[n++] = v.getSExtValue();
          set(c.getResult(), std::move(t));
        }
        return success();
      })
      .Case<arith::AddFOp, arith::SubFOp, arith::MulFOp, arith::DivFOp,
            arith::MaximumFOp, arith::MinimumFOp>(
          [&](Operation *b) -> LogicalResult {
            const Tensor &l = get(b->getOperand(0)), &r = get(b->getOperand(1));
            if (l.shape != r.shape)
              return b->emitError("operand shapes differ at run time");
            Tensor out = Tensor::floats(l.shape);
            for (size_t i = 0; i < out.f.size(); ++i) {
              float a = l.f[i], c = r.f[i];
              out.f[i] = isa<arith::AddFOp>(b)       ? a + c
                         : isa<arith::SubFOp>(b)     ? a - c
                         : isa<arith::MulFOp>(b)     ? a * c
                         : isa<arith::DivFOp>(b)     ? a / c
                         : isa<arith::MaximumFOp>(b) ? std::max(a, c)
                                                     : std::min(a, c);
            }
            set(b->getResult(0), std::move(out));
            return success();
          })
      .Case([&](arith::NegFOp n) -> LogicalResult {
        Tensor x = get(n.getOperand());
        for (float &v : x.f)
          v = -v;
        set(n.getResult(), std::move(x));
        return success();
      })
      .Case([&](tensor::DimOp d) -> LogicalResult {
        const Tensor &x = get(d.getSource());
        int64_t index = get(d.getIndex()).i[0];
        if (index < 0 || index >= static_cast<int64_t>(x.shape.size()))
          return d.emitError("dimension index out of range");
        Tensor t = Tensor::ints({});
        t.i[0] = x.shape[index];
        set(d.getResult(), std::move(t));
        return success();
      })
      .Case([&](tensor::CollapseShapeOp c) -> LogicalResult {
        const Tensor &x = get(c.getSrc());
        SmallVector<int64_t> shape;
        for (ReassociationIndices group : c.getReassociationIndices()) {
          int64_t n = 1;
          for (int64_t i : group)
            n *= x.shape[i];
          shape.push_back(n);
        }
        return evalReshape(c, c.getSrc(), c.getResult(), shape);
      })
      .Case([&](tensor::ExpandShapeOp e) -> LogicalResult {
        SmallVector<int64_t> shape;
        unsigned dynamic = 0;
        for (int64_t s : e.getStaticOutputShape())
          shape.push_back(ShapedType::isDynamic(s)
                              ? get(e.getOutputShape()[dynamic++]).i[0]
                              : s);
        return evalReshape(e, e.getSrc(), e.getResult(), shape);
      })
      .Case([&](tensor::CastOp c) -> LogicalResult {
        const Tensor &x = get(c.getSource());
        auto type = cast<RankedTensorType>(c.getType());
        for (int64_t i = 0; i < type.getRank(); ++i)
          if (!type.isDynamicDim(i) && type.getDimSize(i) != x.shape[i])
            return c.emitError() << "tensor.cast to " << type
                                 << " does not match the run-time shape";
        set(c.getResult(), x);
        return success();
      })
      .Case([&](tensor::ConcatOp c) {
        return evalConcat(c.getInputs(), c.getDim(), c.getResult());
      })
      // Weights hold their dequantized values: the same concatenation.
      .Case([&](ConcatWeightsOp c) {
        return evalConcat(c.getInputs(), c.getAxis(), c.getResult());
      })
      .Case([&](func::CallOp c) -> LogicalResult {
        SmallVector<Tensor> args;
        for (Value v : c.getOperands())
          args.push_back(get(v));
        FailureOr<SmallVector<Tensor>> results =
            interp.call(c.getCallee(), args);
        if (failed(results))
          return failure();
        for (auto [r, t] : llvm::zip(c.getResults(), *results))
          set(r, std::move(t));
        return success();
      })
      .Default([&](Operation *other) -> LogicalResult {
        return other->emitError() << "the ds interpreter does not support '"
                                  << other->getName() << "'";
      });
}

FailureOr<SmallVector<Tensor>> Evaluator::runFunction(func::FuncOp fn,
                                                      ArrayRef<Tensor> args) {
  Block &body = fn.getBody().front();
  // An argument holds values of its type (a bf16 KV cache given as f32
  // values holds them rounded).
  for (auto [arg, t] : llvm::zip(body.getArguments(), args)) {
    Tensor held = t;
    roundToValueType(held, arg);
    values[Value(arg).getAsOpaquePointer()] = std::move(held);
  }
  if (!interp.hasBoundedMemory()) {
    for (Operation &op : body) {
      if (auto ret = dyn_cast<func::ReturnOp>(op)) {
        SmallVector<Tensor> results;
        for (Value v : ret.getOperands())
          results.push_back(get(v));
        return results;
      }
      if (failed(eval(&op)))
        return failure();
    }
    return fn.emitError("function has no return");
  }
  // Bounded memory: weights (params and concatenations of weights) wait
  // for their first user, and every value is dropped after its last.
  llvm::DenseSet<Operation *> deferred;
  llvm::DenseMap<Value, Operation *> lastUser;
  for (Operation &op : body) {
    bool weight =
        isa<ParamOp>(op) || (isa<tensor::ConcatOp, ConcatWeightsOp>(op) &&
                             llvm::all_of(op.getOperands(), [&](Value v) {
                               Operation *def = v.getDefiningOp();
                               return def && deferred.contains(def);
                             }));
    if (weight)
      deferred.insert(&op);
    // Uses inside an op's regions count as the op's.
    op.walk([&](Operation *inner) {
      for (Value v : inner->getOperands())
        lastUser[v] = &op;
    });
  }
  std::function<LogicalResult(Operation *)> evalWithWeights =
      [&](Operation *op) -> LogicalResult {
    for (Value v : op->getOperands()) {
      Operation *def = v.getDefiningOp();
      if (def && deferred.contains(def) &&
          !values.count(v.getAsOpaquePointer()) && failed(evalWithWeights(def)))
        return failure();
    }
    return eval(op);
  };
  for (Operation &op : body) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      SmallVector<Tensor> results;
      for (Value v : ret.getOperands()) {
        Operation *def = v.getDefiningOp();
        if (def && deferred.contains(def) &&
            !values.count(v.getAsOpaquePointer()) &&
            failed(evalWithWeights(def)))
          return failure();
        results.push_back(get(v));
      }
      return results;
    }
    if (deferred.contains(&op))
      continue;
    if (failed(evalWithWeights(&op)))
      return failure();
    op.walk([&](Operation *inner) {
      for (Value v : inner->getOperands())
        if (lastUser.lookup(v) == &op)
          values.erase(v.getAsOpaquePointer());
    });
    for (Value r : op.getResults())
      if (!lastUser.count(r))
        values.erase(r.getAsOpaquePointer());
  }
  return fn.emitError("function has no return");
}

} // namespace

//===----------------------------------------------------------------------===//
// Interpreter
//===----------------------------------------------------------------------===//

FailureOr<SmallVector<Tensor>> Interpreter::call(StringRef name,
                                                 ArrayRef<Tensor> args) {
  auto fn = module.lookupSymbol<func::FuncOp>(name);
  FailureOr<std::optional<PipelineStages>> pipeline =
      fn ? pipelineStagesOf(fn) : std::optional<PipelineStages>();
  if (failed(pipeline))
    return failure();
  if (!fn || (fn.isExternal() && !*pipeline))
    return module.emitError() << "no function @" << name << " to run";
  if (fn.getNumArguments() != args.size())
    return fn.emitError() << "expects " << fn.getNumArguments()
                          << " arguments, got " << args.size();
  FailureOr<std::optional<ProcessGrid>> grid = ProcessGrid::of(module);
  if (failed(grid))
    return failure();
  for (auto [i, type, t] : llvm::enumerate(fn.getArgumentTypes(), args)) {
    auto tt = dyn_cast<RankedTensorType>(type);
    if (tt)
      tt = wholeArgumentType(fn, i);
    if (!tt)
      return fn.emitError() << "argument " << i << " is not a ranked tensor";
    bool wantInt = isa<IntegerType, IndexType>(tt.getElementType());
    if (wantInt != t.isInt)
      return fn.emitError() << "argument " << i << " must hold "
                            << (wantInt ? "integers" : "floats");
    if (tt.getRank() != static_cast<int64_t>(t.shape.size()))
      return fn.emitError() << "argument " << i << " must have rank "
                            << tt.getRank() << ", got " << t.shape.size();
    for (int64_t d = 0; d < tt.getRank(); ++d)
      if (!tt.isDynamicDim(d) && tt.getDimSize(d) != t.shape[d])
        return fn.emitError()
               << "argument " << i << " dimension " << d << " must be "
               << tt.getDimSize(d) << ", got " << t.shape[d];
  }
  if (*grid)
    return callPartitioned(fn, *pipeline, **grid, args);
  if (*pipeline)
    return fn.emitError("a pipelined function in a module without a grid");
  Evaluator evaluator(*this, weights);
  return evaluator.runFunction(fn, args);
}

FailureOr<SmallVector<Tensor>>
Interpreter::callPartitioned(func::FuncOp fn,
                             const std::optional<PipelineStages> &pipeline,
                             const ProcessGrid &grid, ArrayRef<Tensor> args) {
  const int64_t n = grid.size();
  // What each process runs: the function, or its pipeline stage's.
  SmallVector<int16_t> stageAxis;
  if (pipeline) {
    stageAxis.push_back(pipeline->axis);
    if (!grid.hasAxes(stageAxis) ||
        grid.sizeAlong(stageAxis) !=
            static_cast<int64_t>(pipeline->stages.size()))
      return fn.emitError() << "lists " << pipeline->stages.size()
                            << " pipeline stages, not one per process "
                               "along grid axis "
                            << pipeline->axis;
  }
  auto programOf = [&](int64_t r) {
    return pipeline ? pipeline->stages[grid.indexAlong(r, stageAxis)] : fn;
  };
  std::vector<SmallVector<Tensor>> local(n);
  for (int64_t r = 0; r < n; ++r) {
    func::FuncOp program = programOf(r);
    for (unsigned a = 0; a < program.getNumArguments(); ++a) {
      int64_t whole = pipeline ? pipelineArgument(program, a) : a;
      if (whole < 0 || whole >= static_cast<int64_t>(args.size()))
        return program.emitError() << "argument " << a << " is none of @"
                                   << fn.getSymName() << "'s arguments";
      SmallVector<SmallVector<int16_t>> split = argumentSplitAxes(program, a);
      const Tensor &t = args[whole];
      if (failed(grid.blockShape(t.shape, split)))
        return fn.emitError() << "argument " << whole
                              << " does not split evenly over the processes";
      local[r].push_back(grid.block(t, split, r));
    }
  }
  // One thread per process, each with its own values; the collectives are
  // their rendezvous, and a failing process releases the others.
  EmulatedCollectives collectives(grid);
  std::mutex weightsLock;
  std::vector<std::optional<SmallVector<Tensor>>> results(n);
  {
    std::vector<std::thread> threads;
    for (int64_t r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        Process process{r, &collectives, &weightsLock};
        Evaluator evaluator(*this, weights, &process);
        FailureOr<SmallVector<Tensor>> out =
            evaluator.runFunction(programOf(r), local[r]);
        if (failed(out)) {
          collectives.abort();
        } else {
          results[r] = std::move(*out);
          collectives.finished();
        }
      });
    for (std::thread &t : threads)
      t.join();
  }
  if (collectives.deadlocked())
    return fn.emitError("the processes of the partitioned run deadlocked: "
                        "each one left waits for a collective or a receive "
                        "that no other process will make");
  for (const auto &r : results)
    if (!r)
      return failure();
  SmallVector<Tensor> out;
  for (unsigned j = 0; j < fn.getNumResults(); ++j) {
    // The processes computing result j (a pipeline's: those of the stage
    // returning it, in the place of every process of their group along
    // the stage axis) and its index among their results.
    SmallVector<int64_t> source(n);
    std::iota(source.begin(), source.end(), 0);
    unsigned index = j;
    if (pipeline) {
      std::optional<int64_t> stage;
      for (size_t k = 0; k < pipeline->stages.size(); ++k) {
        func::FuncOp program = pipeline->stages[k];
        for (unsigned i = 0; i < program.getNumResults(); ++i)
          if (pipelineResult(program, i) == j) {
            stage = static_cast<int64_t>(k);
            index = i;
          }
      }
      if (!stage)
        return fn.emitError() << "no pipeline stage returns result " << j;
      for (int64_t r = 0; r < n; ++r)
        source[r] = grid.group(r, stageAxis)[*stage];
    }
    func::FuncOp program = programOf(source[0]);
    SmallVector<SmallVector<int16_t>> split = resultSplitAxes(program, index);
    std::vector<Tensor> blocks;
    for (int64_t r = 0; r < n; ++r)
      blocks.push_back((*results[source[r]])[index]);
    if (!split.empty()) {
      out.push_back(grid.assemble(blocks, split));
      continue;
    }
    // A replicated result must be the same on every process.
    for (int64_t r = 1; r < n; ++r)
      if (blocks[r].shape != blocks[0].shape || blocks[r].f != blocks[0].f ||
          blocks[r].i != blocks[0].i)
        return fn.emitError() << "result " << j << " differs between process "
                              << source[0] << " and process " << source[r]
                              << " (a replicated result must not)";
    out.push_back(std::move(blocks[0]));
  }
  return out;
}

FailureOr<std::vector<HostTensor>> Interpreter::run(StringRef name,
                                                    ArrayRef<HostTensor> args) {
  SmallVector<Tensor> in;
  for (const HostTensor &h : args) {
    Tensor t;
    t.shape.assign(h.shape.begin(), h.shape.end());
    if (ds::isFloatDType(h.dtype)) {
      t.f = h.toFloats();
    } else {
      t.isInt = true;
      t.i = h.toInts();
    }
    in.push_back(std::move(t));
  }
  FailureOr<SmallVector<Tensor>> out = call(name, in);
  if (failed(out))
    return failure();
  std::vector<HostTensor> results;
  for (Tensor &t : *out) {
    std::vector<int64_t> shape(t.shape.begin(), t.shape.end());
    results.push_back(t.isInt ? HostTensor::fromInts(shape, t.i)
                              : HostTensor::fromFloats(shape, t.f));
  }
  return results;
}
