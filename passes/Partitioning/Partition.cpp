//===- Partition.cpp - ds-partition: tensor parallelism on shard ----------===//
//
// Places Megatron-style sharding annotations on a model's weights, then lets
// MLIR's shard dialect do the rest: `sharding-propagation` spreads them
// through the ds ops' ShardingInterface models and `shard-partition` turns
// each function into the per-process program with explicit collectives.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/DS/IR/DSSharding.h"
#include "ds/dialects/DS/Transforms/ShardingInterfaceImpl.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Utils/PipelineStages.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Shard/Interfaces/ShardingInterface.h"
#include "mlir/Dialect/Shard/Transforms/Passes.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

#define DEBUG_TYPE "ds-partition"

namespace ds {
#define GEN_PASS_DEF_PARTITIONPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

constexpr StringLiteral kGridName = "grid";

/// The Megatron plan for one function: the split axes of each annotated
/// weight value (a ds.param result), by dimension.
class Planner {
public:
  /// `tpAxis` / `epAxis`: the grid axis tensor / expert parallelism splits
  /// over, or -1 for none.
  Planner(func::FuncOp fn, FlatSymbolRefAttr grid, int16_t tpAxis,
          int16_t epAxis, bool splitEmbedding)
      : fn(fn), grid(grid), tp(axesOf(tpAxis)), ep(axesOf(epAxis)),
        splitEmbedding(splitEmbedding) {}

  /// Annotates the weights of `fn`. Fails on weights that cannot be split.
  LogicalResult run() {
    fn.walk([&](AttentionOp a) {
      for (Value v : {a.getQ(), a.getK(), a.getV()})
        if (LinearOp l = producingProjection(v))
          column(l);
      row(a.getResult());
    });
    fn.walk([&](MLAAttentionOp a) {
      for (Value v : {a.getQNope(), a.getQPe()})
        if (LinearOp l = producingProjection(v))
          column(l);
      split(a.getKvB(), {tp});
      row(a.getResult());
    });
    fn.walk([&](SwiGLUOp g) {
      auto gate = g.getGate().getDefiningOp<LinearOp>();
      auto up = g.getUp().getDefiningOp<LinearOp>();
      if (!gate || !up || !g.getResult().hasOneUse())
        return;
      auto down = dyn_cast<LinearOp>(*g.getResult().getUsers().begin());
      if (!down || down.getInput() != g.getResult() || down.getBias())
        return;
      column(gate);
      column(up);
      split(down.getWeight(), {{}, tp});
    });
    // Routed experts: blocks of experts over the expert-parallel axis, each
    // expert's intermediate size over the tensor-parallel one; the shared
    // expert's intermediate size over both.
    fn.walk([&](MoEOp m) {
      SmallVector<int16_t> both(ep);
      both.append(tp.begin(), tp.end());
      split(m.getExpertGate(), {ep, tp});
      split(m.getExpertUp(), {ep, tp});
      split(m.getExpertDown(), {ep, {}, tp});
      if (m.getSharedGate()) {
        split(m.getSharedGate(), {both});
        split(m.getSharedUp(), {both});
        split(m.getSharedDown(), {{}, both});
      }
    });
    // The embedding table by vocabulary (its rows) over tp.
    if (splitEmbedding)
      fn.walk([&](EmbeddingOp e) { split(e.getTable(), {tp}); });
    // The LM head: a projection whose result the function returns.
    fn.walk([&](func::ReturnOp ret) {
      for (Value v : ret.getOperands())
        if (auto head = v.getDefiningOp<LinearOp>())
          column(head);
    });
    return failure(failed);
  }

private:
  /// The projection whose output channels become `v`'s heads, through ops
  /// that keep each head's channels together; null when there is none.
  static LinearOp producingProjection(Value v) {
    while (Operation *def = v.getDefiningOp()) {
      if (auto l = dyn_cast<LinearOp>(def))
        return l;
      if (isa<RopeOp, SplitHeadsOp>(def)) {
        v = def->getOperand(0);
      } else if (auto norm = dyn_cast<RMSNormOp>(def)) {
        // A per-head norm (Qwen3's q_norm / k_norm), not one over the whole
        // projection.
        if (cast<RankedTensorType>(norm.getInput().getType()).getRank() < 4)
          return {};
        v = norm.getInput();
      } else if (auto s = dyn_cast<SplitOp>(def)) {
        // [nope | rope] within each head.
        auto type = cast<RankedTensorType>(s.getInput().getType());
        if (type.getRank() < 4 ||
            s.getAxis() != static_cast<uint64_t>(type.getRank() - 1))
          return {};
        v = s.getInput();
      } else if (auto c = dyn_cast<CacheUpdateOp>(def)) {
        v = c.getUpdate();
      } else {
        return {};
      }
    }
    return {};
  }

  void column(LinearOp l) {
    split(l.getWeight(), {tp});
    if (l.getBias())
      split(l.getBias(), {tp});
  }

  /// The projection reading attention's merged heads is row-parallel.
  void row(Value attention) {
    for (Operation *user : attention.getUsers()) {
      auto merge = dyn_cast<MergeHeadsOp>(user);
      if (!merge)
        continue;
      for (Operation *u : merge.getResult().getUsers())
        if (auto l = dyn_cast<LinearOp>(u);
            l && l.getInput() == merge.getResult() && !l.getBias())
          split(l.getWeight(), {{}, tp});
    }
  }

  /// Annotates weight `w` (a ds.param result) with `axes`. A param with
  /// several users was given one copy per user first.
  void split(Value w, ArrayRef<SmallVector<int16_t>> axes) {
    if (llvm::all_of(axes, [](ArrayRef<int16_t> a) { return a.empty(); }))
      return; // nothing to split over
    auto param = w.getDefiningOp<ParamOp>();
    if (!param)
      return; // computed weights stay replicated
    if (!isa<RankedTensorType>(param.getType())) {
      param.emitOpError("cannot be partitioned: quantized and 2:4 sparse "
                        "weights cannot be sharded yet (run ds-partition "
                        "before ds-quantize / ds-sparsify-24)");
      failed = true;
      return;
    }
    if (annotated.contains(w))
      return;
    annotated.insert(w);
    SmallVector<shard::GridAxesAttr> attrs;
    for (ArrayRef<int16_t> a : axes)
      attrs.push_back(DenseI16ArrayAttr::get(fn.getContext(), a));
    OpBuilder b(param->getContext());
    b.setInsertionPointAfter(param);
    auto sharding = shard::ShardingOp::create(
        b, param.getLoc(), shard::Sharding::get(grid, attrs));
    auto annotation = shard::ShardOp::create(b, param.getLoc(), w, sharding);
    w.replaceAllUsesExcept(annotation.getResult(), annotation);
  }

  static SmallVector<int16_t> axesOf(int16_t axis) {
    if (axis < 0)
      return {};
    return {axis};
  }

  func::FuncOp fn;
  FlatSymbolRefAttr grid;
  SmallVector<int16_t> tp, ep;
  bool splitEmbedding;
  llvm::DenseSet<Value> annotated;
  bool failed = false;
};

/// Gives each use of a ds.param with several users its own copy, so that
/// each can be split its own way (tied embeddings and LM heads).
void duplicateSharedParams(func::FuncOp fn) {
  SmallVector<ParamOp> params;
  fn.walk([&](ParamOp p) { params.push_back(p); });
  for (ParamOp p : params) {
    SmallVector<OpOperand *> uses;
    for (OpOperand &use : p.getResult().getUses())
      uses.push_back(&use);
    if (uses.size() < 2)
      continue; // drop_begin must not step past the end of no uses
    for (OpOperand *use : llvm::drop_begin(uses)) {
      OpBuilder b(p);
      b.setInsertionPointAfter(p);
      use->set(b.clone(*p)->getResult(0));
    }
  }
}

/// A param selecting rows `rows` of `param`'s tensor (composed with its own
/// select), of type `type`.
ParamOp selectRows(ParamOp param, ArrayRef<int64_t> rows,
                   RankedTensorType type) {
  SmallVector<int64_t> select;
  for (int64_t r : rows)
    select.push_back(param.getSelectAttr() ? param.getSelectAttr()[r] : r);
  OpBuilder b(param);
  b.setInsertionPointAfter(param);
  return ParamOp::create(b, param.getLoc(), type, param.getNameAttr(),
                         b.getDenseI64ArrayAttr(select), param.getScalesAttr(),
                         param.getZeroPointsAttr(), param.getMetaAttr(),
                         param.getGridAttr(), param.getSplitAxesAttr());
}

/// GQA with fewer KV heads than tensor-parallel processes (tp a multiple
/// of them): each KV head is repeated tp / heads times, as Megatron and
/// vLLM replicate KV heads, so that every process holds the one head its
/// block of query heads reads. The K and V projections (and biases) select
/// their rows with repeats, the heads along the way to attention (RoPE,
/// per-head norms, the cache update) become tp, and so does the KV cache
/// argument: each process's cache is its one head. A query head i still
/// reads a copy of KV head i / (query heads / KV heads).
LogicalResult replicateKVHeads(func::FuncOp fn, int64_t tp) {
  SmallVector<AttentionOp> attentions;
  fn.walk([&](AttentionOp a) { attentions.push_back(a); });
  bool changed = false;
  for (AttentionOp a : attentions) {
    auto qType = cast<RankedTensorType>(a.getQ().getType());
    auto kType = cast<RankedTensorType>(a.getK().getType());
    const int64_t kvHeads = kType.getDimSize(2);
    if (ShapedType::isDynamic(kvHeads) || kvHeads >= tp || tp % kvHeads != 0 ||
        qType.getDimSize(2) % tp != 0)
      continue; // nothing to do, or the sharding models refuse it
    const int64_t copies = tp / kvHeads;
    // Keys and values once each (MQA may pass one value as both).
    SmallVector<Value> operands = {a.getK()};
    if (a.getV() != a.getK())
      operands.push_back(a.getV());
    // A value on the way whose other users would see its heads change.
    auto onlyUse = [](Value v) {
      llvm::SmallPtrSet<Operation *, 2> users;
      for (Operation *u : v.getUsers())
        if (!isa<func::ReturnOp>(u))
          users.insert(u);
      return users.size() == 1;
    };
    for (Value operand : operands) {
      // The values from the projection to attention, head dim at 2.
      SmallVector<Value> headValues;
      SplitHeadsOp split;
      LinearOp projection;
      Value v = operand;
      while (Operation *def = v.getDefiningOp()) {
        if (!isa<LinearOp>(def) && !onlyUse(v))
          return a.emitOpError("cannot repeat its KV heads: a value on the "
                               "way to it has other users");
        if (auto c = dyn_cast<CacheUpdateOp>(def)) {
          if (!isa<BlockArgument>(c.getCache()) || !c.getCache().hasOneUse())
            return a.emitOpError("cannot repeat its KV heads: the cache is "
                                 "not an argument of its own");
          headValues.push_back(v);
          headValues.push_back(c.getCache());
          v = c.getUpdate();
        } else if (isa<RopeOp>(def) ||
                   (isa<RMSNormOp>(def) &&
                    cast<RankedTensorType>(v.getType()).getRank() == 4)) {
          headValues.push_back(v);
          v = def->getOperand(0);
        } else if (auto s = dyn_cast<SplitHeadsOp>(def)) {
          headValues.push_back(v);
          split = s;
          v = s.getInput();
        } else {
          projection = dyn_cast<LinearOp>(def);
          break;
        }
      }
      auto weight = projection ? projection.getWeight().getDefiningOp<ParamOp>()
                               : nullptr;
      auto weightType =
          weight ? dyn_cast<RankedTensorType>(weight.getType()) : nullptr;
      if (!split || !weightType || !projection.getResult().hasOneUse())
        return a.emitOpError("cannot repeat its KV heads: they do not come "
                             "from a projection of their own through "
                             "ds.split_heads");
      const int64_t dim = cast<RankedTensorType>(split.getType()).getDimSize(3);
      SmallVector<int64_t> rows;
      for (int64_t h = 0; h < kvHeads; ++h)
        for (int64_t c = 0; c < copies; ++c)
          for (int64_t d = 0; d < dim; ++d)
            rows.push_back(h * dim + d);
      auto rowsOf = [&](RankedTensorType t) {
        SmallVector<int64_t> shape(t.getShape());
        shape[0] = tp * dim;
        return t.clone(shape);
      };
      projection.getWeightMutable().assign(
          selectRows(weight, rows, rowsOf(weightType)));
      if (weight->use_empty())
        weight->erase();
      if (Value bias = projection.getBias()) {
        auto p = bias.getDefiningOp<ParamOp>();
        auto t = p ? dyn_cast<RankedTensorType>(p.getType()) : nullptr;
        if (!t)
          return a.emitOpError("cannot repeat its KV heads: the projection's "
                               "bias is not a plain ds.param");
        projection.getBiasMutable().assign(selectRows(p, rows, rowsOf(t)));
        if (p->use_empty())
          p->erase();
      }
      auto out = cast<RankedTensorType>(projection.getType());
      SmallVector<int64_t> shape(out.getShape());
      shape.back() = tp * dim;
      projection.getResult().setType(out.clone(shape));
      split.setNumHeads(tp);
      for (Value h : headValues) {
        auto t = cast<RankedTensorType>(h.getType());
        SmallVector<int64_t> s(t.getShape());
        s[2] = tp;
        h.setType(t.clone(s));
      }
    }
    changed = true;
  }
  if (changed) {
    // The caches' argument and result types changed with their heads.
    Block &body = fn.getBody().front();
    fn.setType(FunctionType::get(fn.getContext(), body.getArgumentTypes(),
                                 body.getTerminator()->getOperandTypes()));
  }
  return success();
}

/// Data parallelism: every argument (tokens, positions, KV caches: batch
/// first) is split along its batch over `dp`; a per-head KV cache
/// ([B, T, H, D], written by ds.cache_update) also by heads over `tp`, as
/// the attention reading it (an annotation says every dimension).
void annotateArguments(func::FuncOp fn, FlatSymbolRefAttr grid,
                       ArrayRef<int16_t> dp, ArrayRef<int16_t> tp) {
  if (dp.empty())
    return;
  MLIRContext *ctx = fn.getContext();
  OpBuilder b(fn.getBody());
  for (BlockArgument arg : fn.getArguments()) {
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!type || type.getRank() == 0 || arg.use_empty())
      continue;
    SmallVector<shard::GridAxesAttr> split = {DenseI16ArrayAttr::get(ctx, dp)};
    bool headCache =
        type.getRank() == 4 && llvm::any_of(arg.getUses(), [](OpOperand &use) {
          auto update = dyn_cast<CacheUpdateOp>(use.getOwner());
          return update && update.getCache() == use.get();
        });
    if (headCache && !tp.empty())
      split.append(
          {DenseI16ArrayAttr::get(ctx, {}), DenseI16ArrayAttr::get(ctx, tp)});
    auto sharding = shard::ShardingOp::create(
        b, fn.getLoc(), shard::Sharding::get(grid, split));
    auto annotation = shard::ShardOp::create(b, fn.getLoc(), arg, sharding,
                                             /*annotate_for_users=*/true);
    arg.replaceAllUsesExcept(annotation.getResult(), annotation);
  }
}

/// Pipeline stages: the activations a stage receives are replicated over
/// the stage's processes, or split along their batch over `dp` (as
/// annotateArguments splits every used argument then). An argument a
/// stage does not use (the token ids past the first stage, which give the
/// received activations' shape later) is annotated the same way, since
/// shard-partition needs every argument to have a user.
void annotateReceived(func::FuncOp fn, FlatSymbolRefAttr grid,
                      ArrayRef<int64_t> origin, ArrayRef<int16_t> dp) {
  MLIRContext *ctx = fn.getContext();
  OpBuilder b(fn.getBody());
  for (auto [i, o] : llvm::enumerate(origin)) {
    BlockArgument arg = fn.getArgument(i);
    auto type = dyn_cast<RankedTensorType>(arg.getType());
    if (!type || (!arg.use_empty() && (o >= 0 || !dp.empty())))
      continue;
    // Replicated is one dimension split over no axes (an empty list
    // would not print in a form that parses back).
    SmallVector<shard::GridAxesAttr> split = {DenseI16ArrayAttr::get(
        ctx, type.getRank() > 0 ? dp : ArrayRef<int16_t>())};
    auto sharding = shard::ShardingOp::create(
        b, fn.getLoc(), shard::Sharding::get(grid, split));
    auto annotation = shard::ShardOp::create(b, fn.getLoc(), arg, sharding,
                                             /*annotate_for_users=*/true);
    arg.replaceAllUsesExcept(annotation.getResult(), annotation);
  }
}

/// Results the function returns whole (split only along the batch over
/// `dp`): everything but KV caches, which stay each process's shard. A
/// returned projection (the logits) is gathered.
void annotateResults(func::FuncOp fn, FlatSymbolRefAttr grid,
                     ArrayRef<int16_t> dp) {
  fn.walk([&](func::ReturnOp ret) {
    OpBuilder b(ret);
    for (OpOperand &operand : ret->getOpOperands()) {
      auto type = dyn_cast<RankedTensorType>(operand.get().getType());
      if (operand.get().getDefiningOp<CacheUpdateOp>() || !type)
        continue;
      SmallVector<shard::GridAxesAttr> split;
      if (!dp.empty() && type.getRank() > 0)
        split.push_back(DenseI16ArrayAttr::get(fn.getContext(), dp));
      auto sharding = shard::ShardingOp::create(
          b, ret.getLoc(), shard::Sharding::get(grid, split));
      auto annotation =
          shard::ShardOp::create(b, ret.getLoc(), operand.get(), sharding,
                                 /*annotate_for_users=*/true);
      operand.set(annotation.getResult());
    }
  });
}

/// The split axes of a sharding, or null when it replicates.
Attribute splitAxesAttr(MLIRContext *ctx, const shard::Sharding &s) {
  if (!s || shard::isFullReplication(s))
    return {};
  return shard::GridAxesArrayAttr::get(ctx, s.getSplitAxes());
}

/// How propagation split each argument (its annotation for users).
SmallVector<Attribute> argumentShardings(func::FuncOp fn) {
  SmallVector<Attribute> out;
  for (BlockArgument arg : fn.getArguments()) {
    Attribute a;
    for (Operation *user : arg.getUsers())
      if (auto annotation = dyn_cast<shard::ShardOp>(user)) {
        a = splitAxesAttr(fn.getContext(), annotation.getSharding());
        break;
      }
    out.push_back(a);
  }
  return out;
}

/// How each returned value is split (the annotation it is returned
/// through).
SmallVector<Attribute> resultShardings(func::FuncOp fn) {
  SmallVector<Attribute> out(fn.getNumResults());
  fn.walk([&](func::ReturnOp ret) {
    for (OpOperand &operand : ret->getOpOperands())
      if (auto annotation = operand.get().getDefiningOp<shard::ShardOp>())
        out[operand.getOperandNumber()] =
            splitAxesAttr(fn.getContext(), annotation.getSharding());
  });
  return out;
}

/// A remark at `fn`: its collectives and the values per token each process
/// hands to all-reduces and gets from all-gathers (the static dims of their
/// results: batch and sequence are the dynamic ones).
void reportCollectives(func::FuncOp fn) {
  auto perToken = [](Value v) {
    int64_t n = 1;
    for (int64_t d : cast<RankedTensorType>(v.getType()).getShape())
      if (!ShapedType::isDynamic(d))
        n *= d;
    return n;
  };
  int64_t reduces = 0, gathers = 0, reduced = 0, gathered = 0;
  int64_t exchanges = 0, exchanged = 0, sends = 0, sent = 0, recvs = 0;
  fn.walk([&](Operation *op) {
    if (auto s = dyn_cast<shard::SendOp>(op)) {
      ++sends;
      sent += perToken(s.getInput());
    } else if (isa<shard::RecvOp>(op)) {
      ++recvs;
    }
    if (auto r = dyn_cast<shard::AllReduceOp>(op)) {
      ++reduces;
      reduced += perToken(r.getResult());
    } else if (auto g = dyn_cast<shard::AllGatherOp>(op)) {
      ++gathers;
      gathered += perToken(g.getResult());
    } else if (auto m = dyn_cast<MoEOp>(op); m && m.getAllToAll()) {
      // Each of a token's top_k slots goes out as [expert, row] and comes
      // back as a row (the share that stays on its process included).
      const int64_t h = perToken(m.getResult());
      ++exchanges;
      exchanged += m.getRouting().getTopK() * (2 * h + 1);
    }
  });
  InFlightDiagnostic remark = fn.emitRemark();
  remark << "ds-partition: @" << fn.getSymName() << ": " << reduces
         << " all-reduces of " << reduced << " values per token in all, "
         << gathers << " all-gathers of " << gathered << " values per token";
  if (sends || recvs)
    remark << ", " << recvs << " receives from the previous pipeline stage, "
           << sends << " sends of " << sent << " values per token to the next";
  if (exchanges)
    remark << ", " << exchanges << " MoE all-to-all pairs moving at most "
           << exchanged << " values per token";
  // What the process holds: its weights (each distinct ds.param once) and
  // its KV caches' values per token of a sequence (cache arguments are
  // [batch, positions, ...]).
  llvm::StringSet<> seen;
  int64_t weights = 0, weightBytes = 0, cachePerToken = 0;
  fn.walk([&](ParamOp p) {
    std::string key = p.getName().str();
    llvm::raw_string_ostream os(key);
    os << p.getType() << p.getSelectAttr() << p.getSplitAxesAttr();
    if (!seen.insert(key).second)
      return;
    RankedTensorType t = getLogicalTensorType(p.getType());
    if (!t || !t.hasStaticShape())
      return;
    weights += t.getNumElements();
    weightBytes += t.getNumElements() * ((t.getElementTypeBitWidth() + 7) / 8);
  });
  for (BlockArgument arg : fn.getArguments()) {
    auto t = dyn_cast<RankedTensorType>(arg.getType());
    bool cache =
        t && t.getRank() >= 3 && llvm::any_of(arg.getUsers(), [](Operation *u) {
          return isa<CacheUpdateOp>(u);
        });
    if (!cache)
      continue;
    int64_t row = 1;
    for (int64_t d : t.getShape().drop_front(2))
      row *= ShapedType::isDynamic(d) ? 0 : d;
    cachePerToken += row;
  }
  remark << "; this process holds " << weights << " weight values ("
         << llvm::formatv("{0:F2}", weightBytes / double(1 << 30))
         << " GiB as typed here) and " << cachePerToken
         << " KV cache values per token of a sequence";
}

/// moe-all-to-all: a process's MoE block, on its replica's tokens with the
/// whole expert weights, keeps the block of the routed experts of its place
/// along `dpAxes` and exchanges the slots with the other replicas
/// (ds.moe's `all_to_all`).
LogicalResult dispatchOverReplicas(MoEOp moe, FlatSymbolRefAttr grid,
                                   ArrayRef<int16_t> dpAxes, int64_t replicas) {
  MLIRContext *ctx = moe.getContext();
  for (OpOperand *operand :
       {&moe.getExpertGateMutable(), &moe.getExpertUpMutable(),
        &moe.getExpertDownMutable()}) {
    auto param = operand->get().getDefiningOp<ParamOp>();
    auto type = param ? dyn_cast<RankedTensorType>(param.getType()) : nullptr;
    if (!type)
      return moe.emitOpError("moe-all-to-all needs its routed expert weights "
                             "as plain ds.param tensors");
    if (type.getDimSize(0) % replicas != 0)
      return moe.emitOpError()
             << type.getDimSize(0) << " experts do not split over " << replicas
             << " data-parallel processes";
    SmallVector<shard::GridAxesAttr> axes;
    if (param.getSplitAxesAttr())
      axes.assign(param.getSplitAxesAttr().getAxes().begin(),
                  param.getSplitAxesAttr().getAxes().end());
    if (axes.empty())
      axes.push_back(DenseI16ArrayAttr::get(ctx, {}));
    if (!axes.front().empty())
      return moe.emitOpError("the experts are split already");
    axes.front() = DenseI16ArrayAttr::get(ctx, dpAxes);
    SmallVector<int64_t> shape(type.getShape());
    shape[0] /= replicas;
    OpBuilder b(param);
    b.setInsertionPointAfter(param);
    auto block = ParamOp::create(
        b, param.getLoc(), type.clone(shape), param.getNameAttr(),
        param.getSelectAttr(), param.getScalesAttr(), param.getZeroPointsAttr(),
        param.getMetaAttr(), grid, shard::GridAxesArrayAttr::get(ctx, axes));
    operand->set(block.getResult());
    if (param->use_empty())
      param->erase();
  }
  moe.setExpertGridAttr(grid);
  moe.setExpertGridAxesAttr(DenseI16ArrayAttr::get(ctx, dpAxes));
  moe.setAllToAll(true);
  return success();
}

struct PartitionPass : ds::impl::PartitionPassBase<PartitionPass> {
  using PartitionPassBase::PartitionPassBase;

  void getDependentDialects(DialectRegistry &registry) const override {
    PartitionPassBase::getDependentDialects(registry);
    ds::registerShardingInterfaceExternalModels(registry);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (tp < 1 || ep < 1 || dp < 1 || pp < 1) {
      module.emitError() << "ds-partition: tp, ep, dp and pp must be at least "
                            "1, got "
                         << tp << ", " << ep << ", " << dp << " and " << pp;
      return signalPassFailure();
    }
    if (moeAllToAll && (dp < 2 || ep != 1)) {
      module.emitError() << "ds-partition: moe-all-to-all splits the experts "
                            "over the data-parallel processes: it needs dp > "
                            "1 and ep = 1, got dp = "
                         << static_cast<int64_t>(dp)
                         << " and ep = " << static_cast<int64_t>(ep);
      return signalPassFailure();
    }
    if (tp == 1 && ep == 1 && dp == 1 && pp == 1)
      return;
    if (module.lookupSymbol(kGridName)) {
      module.emitError() << "ds-partition: the module already has a symbol @"
                         << kGridName << " (is it partitioned already?)";
      return signalPassFailure();
    }
    // Axes, each only when more than one process: [pp, dp, ep, tp] (ep
    // before tp: the experts' blocks in grid order are ascending expert
    // ids; pp outermost: a stage's processes are consecutive ranks).
    OpBuilder b(module.getBodyRegion());
    SmallVector<int64_t> shape;
    int16_t ppAxis = -1, dpAxis = -1, epAxis = -1, tpAxis = -1;
    auto addAxis = [&](int64_t size, int16_t &axis) {
      if (size > 1) {
        axis = static_cast<int16_t>(shape.size());
        shape.push_back(size);
      }
    };
    addAxis(pp, ppAxis);
    addAxis(dp, dpAxis);
    addAxis(ep, epAxis);
    addAxis(tp, tpAxis);
    SmallVector<int16_t> dpAxes;
    if (dpAxis >= 0)
      dpAxes.push_back(dpAxis);
    shard::GridOp::create(b, module.getLoc(), kGridName, shape);
    auto grid = FlatSymbolRefAttr::get(module.getContext(), kGridName);

    SmallVector<func::FuncOp> functions;
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal())
        functions.push_back(fn);
    // Each use of a shared weight its own param; KV heads repeated up to
    // tp (before the stages are cut, so that a pipelined function's whole
    // signature has the caches its stages split).
    for (func::FuncOp fn : functions) {
      duplicateSharedParams(fn);
      if (tp > 1 && failed(replicateKVHeads(fn, tp)))
        return signalPassFailure();
    }
    // Pipeline parallelism: every function becomes its stages, each then
    // partitioned as a function of its own.
    std::vector<StagedFunction> staged;
    llvm::DenseMap<func::FuncOp, ArrayRef<int64_t>> received;
    if (pp > 1) {
      SmallVector<func::FuncOp> stages;
      for (func::FuncOp fn : functions) {
        FailureOr<StagedFunction> s = splitIntoStages(fn, pp);
        if (failed(s))
          return signalPassFailure();
        staged.push_back(std::move(*s));
      }
      for (StagedFunction &s : staged)
        for (auto [stage, origin] : llvm::zip(s.stages, s.argOrigin)) {
          stages.push_back(stage);
          received[stage] = origin;
        }
      functions = std::move(stages);
    }
    for (func::FuncOp fn : functions) {
      if (failed(Planner(fn, grid, tpAxis, epAxis, splitEmbedding).run()))
        return signalPassFailure();
      SmallVector<int16_t> tpAxes;
      if (tpAxis >= 0)
        tpAxes.push_back(tpAxis);
      annotateArguments(fn, grid, dpAxes, tpAxes);
      if (received.count(fn))
        annotateReceived(fn, grid, received[fn], dpAxes);
      annotateResults(fn, grid, dpAxes);
    }

    OpPassManager propagate(ModuleOp::getOperationName());
    propagate.nest<func::FuncOp>().addPass(shard::createShardingPropagation());
    if (failed(runPipeline(propagate, module)))
      return signalPassFailure();
    // How each argument and result is split, before partitioning rewrites
    // the signatures to the processes' blocks.
    llvm::DenseMap<func::FuncOp,
                   std::pair<SmallVector<Attribute>, SmallVector<Attribute>>>
        signatures;
    for (func::FuncOp fn : functions)
      signatures[fn] = {argumentShardings(fn), resultShardings(fn)};

    OpPassManager partition(ModuleOp::getOperationName());
    OpPassManager &fpm = partition.nest<func::FuncOp>();
    fpm.addPass(shard::createPartition());
    fpm.addPass(createCanonicalizerPass());
    fpm.addPass(createCSEPass());
    if (failed(runPipeline(partition, module)))
      return signalPassFailure();
    for (func::FuncOp fn : functions) {
      auto &[args, results] = signatures[fn];
      for (auto [i, a] : llvm::enumerate(args))
        if (a)
          fn.setArgAttr(i, kSplitAxesAttrName, a);
      for (auto [i, a] : llvm::enumerate(results))
        if (a)
          fn.setResultAttr(i, kSplitAxesAttrName, a);
    }

    if (moeAllToAll)
      for (func::FuncOp fn : functions) {
        WalkResult r = fn.walk([&](MoEOp moe) {
          return failed(dispatchOverReplicas(moe, grid, dpAxes, dp))
                     ? WalkResult::interrupt()
                     : WalkResult::advance();
        });
        if (r.wasInterrupted())
          return signalPassFailure();
      }

    for (StagedFunction &s : staged)
      if (failed(connectStages(s, grid, ppAxis)))
        return signalPassFailure();

    if (printCollectives)
      for (func::FuncOp fn : functions)
        reportCollectives(fn);

    // Whatever the partitioner could not place is an error, not silently
    // replicated work with annotations left behind.
    WalkResult leftover = module.walk([&](Operation *op) {
      if (isa<shard::ShardOp, shard::ShardingOp>(op)) {
        op->emitError("ds-partition left a sharding annotation behind");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (leftover.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
