//===- ShardingInterfaceImpl.cpp - ds ops in MLIR's shard dialect ---------===//
//
// Each ds op describes its iteration space to the shard dialect as loops
// (parallel, or reductions summed across processes) and one indexing map
// per operand and result. Dimensions that no loop may split (a head's
// channels, RMSNorm's reduced axis, a KV cache's time axis) are "fixed":
// propagation never splits them, and a partition that would is an error.
// Ops the partitioner does not split (router, dispatch, fused kernels) are
// replicated: their operands are gathered first.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/Transforms/ShardingInterfaceImpl.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/Extensions/ShardingExtensions.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/Dialect/Shard/Interfaces/ShardingInterface.h"
#include "mlir/Dialect/Shard/Interfaces/ShardingInterfaceImpl.h"
#include "mlir/Dialect/Tensor/Extensions/ShardingExtensions.h"
#include "mlir/IR/AffineExpr.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/SetOperations.h"
#include "llvm/ADT/SetVector.h"

namespace ds {
namespace {

using shard::GridAxis;
using shard::ReductionKind;
using shard::Sharding;
using shard::ShardingArray;
using shard::ShardingOption;
using utils::IteratorType;

/// An op's iteration space for the shard dialect.
struct Space {
  SmallVector<IteratorType> loops;
  /// One per operand, then one per result (results: dimension exprs only).
  SmallVector<AffineMap> maps;
  /// Loops that must never be split.
  SmallVector<unsigned> fixed;
};

/// Builds the maps of a space over `n` loops.
struct MapBuilder {
  MLIRContext *ctx;
  unsigned n;
  /// Loops added for dimensions no loop of the op's own indexes (a KV
  /// cache's time axis seen from the queries): the shard dialect wants one
  /// loop per dimension, so each such dimension gets a loop that is never
  /// split.
  unsigned extra = 0;
  static constexpr unsigned kSlack = 16;

  AffineExpr d(unsigned i) const { return getAffineDimExpr(i, ctx); }
  AffineExpr c0() {
    assert(extra < kSlack && "too many unindexed dimensions");
    return d(n + extra++);
  }
  AffineMap map(ArrayRef<AffineExpr> exprs) const {
    return AffineMap::get(n + kSlack, 0, exprs, ctx);
  }
  /// The space with the extra loops appended (parallel, fixed) and every
  /// map over the final loop count.
  Space finish(Space s) const {
    unsigned total = n + extra;
    s.loops.append(extra, IteratorType::parallel);
    for (unsigned i = n; i < total; ++i)
      s.fixed.push_back(i);
    for (AffineMap &map : s.maps)
      map = AffineMap::get(total, 0, map.getResults(), ctx);
    return s;
  }
  /// (d[first], ..., d[first + count - 1]).
  SmallVector<AffineExpr> dims(unsigned first, unsigned count) const {
    SmallVector<AffineExpr> out;
    for (unsigned i = 0; i < count; ++i)
      out.push_back(d(first + i));
    return out;
  }
};

SmallVector<shard::GridAxesAttr> toAttrs(MLIRContext *ctx,
                                         const ShardingArray &axes) {
  SmallVector<shard::GridAxesAttr> out;
  for (const SmallVector<GridAxis> &a : axes)
    out.push_back(DenseI16ArrayAttr::get(ctx, a));
  return out;
}

int64_t rankOf(Value v) {
  return cast<RankedTensorType>(v.getType()).getRank();
}

/// The one loop an operand dimension's expression depends on, if exactly one.
std::optional<unsigned> singleLoop(AffineExpr expr) {
  std::optional<unsigned> found;
  bool several = false;
  expr.walk([&](AffineExpr e) {
    if (auto dim = dyn_cast<AffineDimExpr>(e)) {
      if (found && *found != dim.getPosition())
        several = true;
      found = dim.getPosition();
    }
  });
  if (several)
    return std::nullopt;
  return found;
}

/// The grid axes each loop is split over, read from the annotations of the
/// operands and results (dimensions whose expression names one loop).
ShardingArray loopAxes(const Space &space, ArrayRef<Sharding> operands,
                       ArrayRef<Sharding> results) {
  ShardingArray axes(space.loops.size());
  auto visit = [&](const Sharding &sharding, AffineMap map) {
    if (!sharding)
      return;
    for (auto [dimAxes, expr] :
         llvm::zip(sharding.getSplitAxes(), map.getResults())) {
      if (dimAxes.empty())
        continue;
      if (std::optional<unsigned> loop = singleLoop(expr))
        axes[*loop].assign(dimAxes.asArrayRef().begin(),
                           dimAxes.asArrayRef().end());
    }
  };
  for (auto [i, s] : llvm::enumerate(operands))
    visit(s, space.maps[i]);
  for (auto [i, s] : llvm::enumerate(results))
    visit(s, space.maps[operands.size() + i]);
  return axes;
}

FlatSymbolRefAttr gridOf(ArrayRef<Sharding> operands,
                         ArrayRef<Sharding> results) {
  for (const Sharding &s : operands)
    if (s)
      return s.getGridAttr();
  for (const Sharding &s : results)
    if (s)
      return s.getGridAttr();
  return {};
}

/// The number of processes along `axes` of `grid`.
int64_t processesAlong(Operation *op, FlatSymbolRefAttr grid,
                       ArrayRef<GridAxis> axes,
                       SymbolTableCollection &symbols) {
  shard::GridOp g = shard::getGrid(op, grid, symbols);
  return shard::collectiveProcessGroupSize(axes, g.getShape());
}

/// Sums `op`'s partitioned results over `axes` (a split contraction).
void allReduceResults(Operation *op, FlatSymbolRefAttr grid,
                      ArrayRef<GridAxis> axes, IRMapping &mapping,
                      OpBuilder &builder) {
  ImplicitLocOpBuilder b(op->getLoc(), builder);
  for (Value r : op->getResults()) {
    Value local = mapping.lookup(r);
    Value sum = shard::AllReduceOp::create(b, local, grid.getValue(), axes,
                                           ReductionKind::Sum);
    mapping.map(r, sum);
  }
  builder.setInsertionPoint(b.getInsertionBlock(), b.getInsertionPoint());
}

/// Shared implementation: `Model::space(op)` gives the iteration space;
/// `Model::check` (default: none) refuses splits the op cannot take;
/// `Model::partitionLocal` (default: a clone on the local shapes) builds the
/// per-process op; results of a split reduction are then summed.
template <typename Model, typename Op>
struct SpaceModel : public shard::ShardingInterface::ExternalModel<Model, Op> {
  SmallVector<IteratorType> getLoopIteratorTypes(Operation *op) const {
    return Model::space(op).loops;
  }
  SmallVector<ReductionKind>
  getReductionLoopIteratorKinds(Operation *op) const {
    Space s = Model::space(op);
    return SmallVector<ReductionKind>(
        llvm::count(s.loops, IteratorType::reduction), ReductionKind::Sum);
  }
  SmallVector<AffineMap> getIndexingMaps(Operation *op) const {
    return Model::space(op).maps;
  }
  FailureOr<ShardingOption>
  getShardingOption(Operation *op, ArrayRef<Sharding> operands,
                    ArrayRef<Sharding> results) const {
    Space s = Model::space(op);
    FailureOr<ShardingOption> option =
        shard::detail::defaultGetShardingOption(op, operands, results);
    if (failed(option) || option->empty)
      return option;
    for (unsigned f : s.fixed)
      if (f < option->shardingArray.size())
        option->shardingArray[f].clear();
    shard::removeTrailingEmptySubArray(option->shardingArray);
    return option;
  }

  /// `axes`: the grid axes each loop is split over.
  static LogicalResult check(Operation *, const ShardingArray &axes,
                             FlatSymbolRefAttr grid,
                             SymbolTableCollection &symbols) {
    return success();
  }

  static LogicalResult partitionLocal(Operation *op,
                                      ArrayRef<Value> partitioned,
                                      ArrayRef<Sharding> operandShardings,
                                      ArrayRef<Sharding> resultShardings,
                                      const ShardingArray &, IRMapping &mapping,
                                      SymbolTableCollection &symbols,
                                      OpBuilder &builder) {
    shard::partitionTriviallyShardableOperation(
        *op, partitioned, operandShardings, resultShardings, mapping, symbols,
        builder);
    return success();
  }

  LogicalResult partition(Operation *op, ArrayRef<Value> partitioned,
                          ArrayRef<Sharding> operandShardings,
                          ArrayRef<Sharding> resultShardings,
                          IRMapping &mapping, SymbolTableCollection &symbols,
                          OpBuilder &builder) const {
    Space s = Model::space(op);
    ShardingArray axes = loopAxes(s, operandShardings, resultShardings);
    for (unsigned f : s.fixed)
      if (!axes[f].empty())
        return op->emitOpError() << "cannot be partitioned along its loop " << f
                                 << " (a dimension that must stay whole)";
    // Every axis a reduction loop is split over, once, in grid order (the
    // order the partial sums are added in).
    SmallVector<GridAxis> reduced;
    for (auto [type, loopAxes] : llvm::zip(s.loops, axes))
      if (type == IteratorType::reduction)
        llvm::append_range(reduced, loopAxes);
    llvm::sort(reduced);
    reduced.erase(llvm::unique(reduced), reduced.end());
    if (failed(Model::check(op, axes, gridOf(operandShardings, resultShardings),
                            symbols)) ||
        failed(Model::partitionLocal(op, partitioned, operandShardings,
                                     resultShardings, axes, mapping, symbols,
                                     builder)))
      return failure();
    if (!reduced.empty())
      allReduceResults(op, gridOf(operandShardings, resultShardings), reduced,
                       mapping, builder);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

struct ParamModel : SpaceModel<ParamModel, ParamOp> {
  static Space space(Operation *op) {
    int64_t rank = getLogicalTensorType(op->getResult(0).getType()).getRank();
    MapBuilder m{op->getContext(), static_cast<unsigned>(rank)};
    return m.finish({SmallVector<IteratorType>(rank, IteratorType::parallel),
                     {m.map(m.dims(0, rank))},
                     {}});
  }
  static LogicalResult partitionLocal(Operation *op, ArrayRef<Value>,
                                      ArrayRef<Sharding>,
                                      ArrayRef<Sharding> resultShardings,
                                      const ShardingArray &, IRMapping &mapping,
                                      SymbolTableCollection &symbols,
                                      OpBuilder &builder) {
    auto param = cast<ParamOp>(op);
    const Sharding &sharding = resultShardings[0];
    if (!sharding || shard::isFullReplication(sharding)) {
      builder.clone(*op, mapping);
      return success();
    }
    auto type = dyn_cast<RankedTensorType>(param.getType());
    if (!type || param.isSharded())
      return op->emitOpError("only an unsharded plain tensor weight can be "
                             "split (partition before quantizing)");
    shard::GridOp grid = shard::getGrid(op, sharding.getGridAttr(), symbols);
    for (auto [dim, axes] : llvm::enumerate(sharding.getSplitAxes())) {
      int64_t n =
          shard::collectiveProcessGroupSize(axes.asArrayRef(), grid.getShape());
      if (n > 1 && type.getDimSize(dim) % n != 0)
        return op->emitOpError()
               << "dimension " << dim << " of '" << param.getName() << "' ("
               << type.getDimSize(dim) << ") does not split evenly "
               << "over " << n << " processes";
    }
    auto local = cast<RankedTensorType>(shard::shardType(type, grid, sharding));
    SmallVector<shard::GridAxesAttr> axes(sharding.getSplitAxes());
    while (!axes.empty() && axes.back().empty())
      axes.pop_back();
    auto split = shard::GridAxesArrayAttr::get(op->getContext(), axes);
    auto clone = ParamOp::create(
        builder, op->getLoc(), local, param.getNameAttr(),
        param.getSelectAttr(), param.getScalesAttr(), param.getZeroPointsAttr(),
        param.getMetaAttr(), sharding.getGridAttr(), split);
    mapping.map(param.getResult(), clone.getResult());
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

/// RMSNorm over the last axis, which stays whole.
struct RMSNormModel : SpaceModel<RMSNormModel, RMSNormOp> {
  static Space space(Operation *op) {
    auto norm = cast<RMSNormOp>(op);
    unsigned r = rankOf(norm.getInput());
    MapBuilder m{op->getContext(), r};
    return m.finish(
        {SmallVector<IteratorType>(r, IteratorType::parallel),
         {m.map(m.dims(0, r)), m.map({m.d(r - 1)}), m.map(m.dims(0, r))},
         {r - 1}});
  }
};

/// y[b.., n] = sum_k x[b.., k] w[n, k] (+ bias[n]): n column-parallel, k
/// row-parallel (partial sums, then an all-reduce).
struct LinearModel : SpaceModel<LinearModel, LinearOp> {
  static Space space(Operation *op) {
    auto linear = cast<LinearOp>(op);
    unsigned r = rankOf(linear.getInput());
    unsigned n = r - 1, k = r;
    MapBuilder m{op->getContext(), r + 1};
    SmallVector<IteratorType> loops(r, IteratorType::parallel);
    loops.push_back(IteratorType::reduction);
    SmallVector<AffineExpr> in = m.dims(0, r - 1), out = m.dims(0, r - 1);
    in.push_back(m.d(k));
    out.push_back(m.d(n));
    SmallVector<AffineMap> maps = {m.map(in), m.map({m.d(n), m.d(k)})};
    if (linear.getBias())
      maps.push_back(m.map({m.d(n)}));
    maps.push_back(m.map(out));
    return m.finish({loops, maps, {}});
  }
  static LogicalResult check(Operation *op, const ShardingArray &axes,
                             FlatSymbolRefAttr, SymbolTableCollection &) {
    if (cast<LinearOp>(op).getBias() && !axes.back().empty())
      return op->emitOpError("a row-parallel projection with a bias is not "
                             "supported (the bias would be added on every "
                             "process)");
    return success();
  }
};

/// Elementwise product with size-1 broadcasting: a broadcast operand
/// dimension is not indexed by the loop.
struct MulModel : SpaceModel<MulModel, MulOp> {
  static Space space(Operation *op) {
    auto mul = cast<MulOp>(op);
    unsigned r = rankOf(mul.getResult());
    MapBuilder m{op->getContext(), r};
    auto lt = cast<RankedTensorType>(mul.getLhs().getType());
    auto rt = cast<RankedTensorType>(mul.getRhs().getType());
    auto operandMap = [&](RankedTensorType self, RankedTensorType other) {
      SmallVector<AffineExpr> e;
      for (unsigned i = 0; i < r; ++i)
        e.push_back(self.getDimSize(i) == 1 && other.getDimSize(i) != 1
                        ? m.c0()
                        : m.d(i));
      return m.map(e);
    };
    return m.finish(
        {SmallVector<IteratorType>(r, IteratorType::parallel),
         {operandMap(lt, rt), operandMap(rt, lt), m.map(m.dims(0, r))},
         {}});
  }
};

//===----------------------------------------------------------------------===//
// Shape plumbing
//===----------------------------------------------------------------------===//

/// [.., H*D] -> [.., H, D]: the heads split with the channels they own.
struct SplitHeadsModel : SpaceModel<SplitHeadsModel, SplitHeadsOp> {
  static Space space(Operation *op) {
    auto split = cast<SplitHeadsOp>(op);
    unsigned r = rankOf(split.getInput()); // result rank r + 1
    int64_t headDim =
        cast<RankedTensorType>(split.getResult().getType()).getShape().back();
    MapBuilder m{op->getContext(), r + 1};
    SmallVector<AffineExpr> in = m.dims(0, r - 1);
    in.push_back(m.d(r - 1) * headDim + m.d(r));
    return m.finish({SmallVector<IteratorType>(r + 1, IteratorType::parallel),
                     {m.map(in), m.map(m.dims(0, r + 1))},
                     {r}});
  }
  FailureOr<ShardingOption>
  getShardingOption(Operation *op, ArrayRef<Sharding> operands,
                    ArrayRef<Sharding> results) const {
    // The input's last axis maps to two loops; read it as the heads'.
    Space s = space(op);
    unsigned r = rankOf(op->getOperand(0));
    FlatSymbolRefAttr grid = gridOf(operands, results);
    if (!grid)
      return ShardingOption::makeEmpty();
    ShardingArray axes(r + 1);
    if (results[0]) {
      axes = loopAxes(s, {Sharding()}, results);
    } else if (operands[0]) {
      for (auto [i, dimAxes] : llvm::enumerate(operands[0].getSplitAxes()))
        axes[i].assign(dimAxes.asArrayRef().begin(),
                       dimAxes.asArrayRef().end());
    }
    axes[r].clear();
    shard::removeTrailingEmptySubArray(axes);
    return ShardingOption(axes, grid);
  }
  static LogicalResult
  partitionLocal(Operation *op, ArrayRef<Value> partitioned,
                 ArrayRef<Sharding> operandShardings,
                 ArrayRef<Sharding> resultShardings, const ShardingArray &axes,
                 IRMapping &mapping, SymbolTableCollection &symbols,
                 OpBuilder &builder) {
    auto split = cast<SplitHeadsOp>(op);
    unsigned r = rankOf(split.getInput());
    int64_t n = 1;
    if (!axes[r - 1].empty())
      n = processesAlong(op, gridOf(operandShardings, resultShardings),
                         axes[r - 1], symbols);
    if (split.getNumHeads() % n != 0)
      return op->emitOpError()
             << split.getNumHeads() << " heads do not split evenly over " << n
             << " processes";
    auto local = SplitHeadsOp::create(builder, op->getLoc(), partitioned[0],
                                      split.getNumHeads() / n);
    mapping.map(split.getResult(), local.getResult());
    return success();
  }
};

/// [.., H, D] -> [.., H*D]: the merged axis is split as the heads were. Its
/// result map is not a projection, so the annotations are computed here.
struct MergeHeadsModel
    : public shard::ShardingInterface::ExternalModel<MergeHeadsModel,
                                                     MergeHeadsOp> {
  SmallVector<IteratorType> getLoopIteratorTypes(Operation *op) const {
    return SmallVector<IteratorType>(rankOf(op->getOperand(0)),
                                     IteratorType::parallel);
  }
  SmallVector<AffineMap> getIndexingMaps(Operation *op) const {
    unsigned r = rankOf(op->getOperand(0));
    MapBuilder m{op->getContext(), r};
    int64_t headDim =
        cast<RankedTensorType>(op->getOperand(0).getType()).getShape().back();
    SmallVector<AffineExpr> out = m.dims(0, r - 2);
    out.push_back(m.d(r - 2) * headDim + m.d(r - 1));
    return {m.map(m.dims(0, r)), m.map(out)};
  }
  FailureOr<ShardingOption>
  getShardingOption(Operation *op, ArrayRef<Sharding> operands,
                    ArrayRef<Sharding> results) const {
    unsigned r = rankOf(op->getOperand(0));
    FlatSymbolRefAttr grid = gridOf(operands, results);
    if (!grid)
      return ShardingOption::makeEmpty();
    ShardingArray axes(r);
    auto copy = [&](const Sharding &s) {
      for (auto [i, dimAxes] : llvm::enumerate(s.getSplitAxes()))
        axes[i].assign(dimAxes.asArrayRef().begin(),
                       dimAxes.asArrayRef().end());
    };
    // Result dims 0..r-3 are loops 0..r-3 and its last is the heads (r-2).
    if (results[0])
      copy(results[0]);
    else if (operands[0])
      copy(operands[0]);
    axes[r - 1].clear();
    shard::removeTrailingEmptySubArray(axes);
    return ShardingOption(axes, grid);
  }
  static std::pair<Sharding, Sharding> shardings(Operation *op,
                                                 const ShardingOption &o) {
    unsigned r = rankOf(op->getOperand(0));
    SmallVector<SmallVector<GridAxis>> in(r), out(r - 1);
    for (unsigned i = 0; i < r && i < o.shardingArray.size(); ++i) {
      in[i] = o.shardingArray[i];
      if (i + 1 < r)
        out[i] = o.shardingArray[i];
    }
    shard::removeTrailingEmptySubArray(in);
    shard::removeTrailingEmptySubArray(out);
    MLIRContext *ctx = op->getContext();
    return {Sharding::get(o.grid, toAttrs(ctx, in)),
            Sharding::get(o.grid, toAttrs(ctx, out))};
  }
  FailureOr<std::vector<Sharding>>
  getShardingAnnotations(Operation *op, const ShardingOption &o) const {
    auto [in, out] = shardings(op, o);
    return std::vector<Sharding>{in, out};
  }
  LogicalResult addShardingAnnotations(Operation *op, OpBuilder &b,
                                       const ShardingOption &o) const {
    auto [in, out] = shardings(op, o);
    shard::maybeInsertTargetShardingAnnotation(out, op->getResult(0), b);
    OpBuilder::InsertionGuard guard(b);
    shard::maybeInsertSourceShardingAnnotation(in, op->getOpOperand(0), b);
    return success();
  }
  LogicalResult partition(Operation *op, ArrayRef<Value> partitioned,
                          ArrayRef<Sharding> operandShardings,
                          ArrayRef<Sharding> resultShardings,
                          IRMapping &mapping, SymbolTableCollection &symbols,
                          OpBuilder &builder) const {
    unsigned r = rankOf(op->getOperand(0));
    if (operandShardings[0] && operandShardings[0].getSplitAxes().size() >= r &&
        !operandShardings[0].getSplitAxes()[r - 1].empty())
      return op->emitOpError("cannot be partitioned along the head dimension");
    auto local = MergeHeadsOp::create(builder, op->getLoc(), partitioned[0]);
    mapping.map(op->getResult(0), local.getResult());
    return success();
  }
};

/// Pieces along `axis`, which stays whole.
struct SplitModel : SpaceModel<SplitModel, SplitOp> {
  static Space space(Operation *op) {
    auto split = cast<SplitOp>(op);
    unsigned r = rankOf(split.getInput());
    MapBuilder m{op->getContext(), r};
    SmallVector<AffineMap> maps(1 + split.getNumResults(), m.map(m.dims(0, r)));
    return m.finish({SmallVector<IteratorType>(r, IteratorType::parallel),
                     maps,
                     {static_cast<unsigned>(split.getAxis())}});
  }
};

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// Rotations within each vector: the last axis stays whole.
struct RopeModel : SpaceModel<RopeModel, RopeOp> {
  static Space space(Operation *op) {
    auto rope = cast<RopeOp>(op);
    unsigned r = rankOf(rope.getInput());
    MapBuilder m{op->getContext(), r};
    return m.finish(
        {SmallVector<IteratorType>(r, IteratorType::parallel),
         {m.map(m.dims(0, r)), m.map({m.d(0), m.d(1)}), m.map(m.dims(0, r))},
         {r - 1}});
  }
};

/// Loops (b, s, h, dv): heads split (a KV head with its query group), the
/// sequence and channels whole.
struct AttentionModel : SpaceModel<AttentionModel, AttentionOp> {
  static Space space(Operation *op) {
    MapBuilder m{op->getContext(), 4};
    AffineExpr b = m.d(0), s = m.d(1), h = m.d(2), dv = m.d(3), c = m.c0();
    return m.finish({SmallVector<IteratorType>(4, IteratorType::parallel),
                     {m.map({b, s, h, c}), m.map({b, c, h, c}),
                      m.map({b, c, h, c}), m.map({b, s}), m.map({b, s, h, dv})},
                     {1, 3}});
  }
  static LogicalResult check(Operation *op, const ShardingArray &axes,
                             FlatSymbolRefAttr grid,
                             SymbolTableCollection &symbols) {
    if (!axes[2].empty()) {
      int64_t n = processesAlong(op, grid, axes[2], symbols);
      for (Value v : {op->getOperand(0), op->getOperand(1)}) {
        int64_t heads = cast<RankedTensorType>(v.getType()).getDimSize(2);
        if (ShapedType::isDynamic(heads) || heads % n != 0)
          return op->emitOpError()
                 << heads << " heads do not split evenly over " << n
                 << " processes (ds-partition repeats KV heads only when tp "
                    "is a multiple of them)";
      }
    }
    return success();
  }
};

/// MLA by heads: the queries and kv_b's head-major rows split, the latent
/// c_kv and shared k_pe replicated.
struct MLAAttentionModel : SpaceModel<MLAAttentionModel, MLAAttentionOp> {
  static Space space(Operation *op) {
    MapBuilder m{op->getContext(), 4};
    AffineExpr b = m.d(0), s = m.d(1), h = m.d(2), dv = m.d(3), c = m.c0();
    return m.finish(
        {SmallVector<IteratorType>(4, IteratorType::parallel),
         {m.map({b, s, h, c}), m.map({b, s, h, c}), m.map({b, c, c}),
          m.map({b, c, c}), m.map({h, c}), m.map({b, s}), m.map({b, s, h, dv})},
         {1, 3}});
  }
};

/// Loops (b, t, s, trailing...): the cache rows split as the values
/// written into them (heads); time and sequence whole.
struct CacheUpdateModel : SpaceModel<CacheUpdateModel, CacheUpdateOp> {
  static Space space(Operation *op) {
    unsigned r = rankOf(op->getOperand(0));
    MapBuilder m{op->getContext(), r + 1};
    SmallVector<AffineExpr> cache = {m.d(0), m.d(1)}, upd = {m.d(0), m.d(2)};
    for (unsigned i = 2; i < r; ++i) {
      cache.push_back(m.d(i + 1));
      upd.push_back(m.d(i + 1));
    }
    return m.finish(
        {SmallVector<IteratorType>(r + 1, IteratorType::parallel),
         {m.map(cache), m.map({m.d(0), m.d(2)}), m.map(upd), m.map(cache)},
         {1, 2}});
  }
};

/// Loops (ids..., h, v): the table's rows are the vocabulary loop `v`, a
/// reduction (each id selects one row): split over a grid axis (a
/// vocabulary-split embedding), each process looks up the ids in its block
/// of the vocabulary, zeros for the others, and one all-reduce completes the
/// rows. The ids are never indexed by `v`, so they stay whole.
struct EmbeddingModel : SpaceModel<EmbeddingModel, EmbeddingOp> {
  static Space space(Operation *op) {
    auto emb = cast<EmbeddingOp>(op);
    unsigned r = rankOf(emb.getIds());
    unsigned h = r, v = r + 1;
    MapBuilder m{op->getContext(), r + 2};
    SmallVector<AffineExpr> out = m.dims(0, r);
    out.push_back(m.d(h));
    SmallVector<IteratorType> loops(r + 1, IteratorType::parallel);
    loops.push_back(IteratorType::reduction);
    return m.finish({loops,
                     {m.map({m.d(v), m.d(h)}), m.map(m.dims(0, r)), m.map(out)},
                     {}});
  }
  /// A process holding a block of the vocabulary says so (vocab_grid).
  static LogicalResult
  partitionLocal(Operation *op, ArrayRef<Value> partitioned,
                 ArrayRef<Sharding> operandShardings,
                 ArrayRef<Sharding> resultShardings, const ShardingArray &axes,
                 IRMapping &mapping, SymbolTableCollection &symbols,
                 OpBuilder &builder) {
    auto emb = cast<EmbeddingOp>(op);
    const SmallVector<GridAxis> &v = axes[rankOf(emb.getIds()) + 1];
    if (failed(SpaceModel::partitionLocal(op, partitioned, operandShardings,
                                          resultShardings, axes, mapping,
                                          symbols, builder)))
      return failure();
    if (!v.empty()) {
      auto local =
          cast<EmbeddingOp>(mapping.lookup(emb.getResult()).getDefiningOp());
      local.setVocabGridAttr(gridOf(operandShardings, resultShardings));
      local.setVocabGridAxesAttr(DenseI16ArrayAttr::get(op->getContext(), v));
    }
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

/// Loops (tokens..., h, e, i, is): the routed experts split along the
/// expert axis `e` (expert parallelism: each process a block of them) and
/// their intermediate size `i`, the shared expert along its own `is`, each a
/// reduction: the block's output is a partial sum that one all-reduce over
/// every split axis completes. The router, the tokens and the hidden axis
/// stay whole. A grid axis may split both `e` and `is` (the shared expert
/// is tensor-parallel across the expert-parallel processes too), which the
/// default option builder refuses, so the option is read off the operands
/// here.
struct MoEModel : SpaceModel<MoEModel, MoEOp> {
  static Space space(Operation *op) {
    auto moe = cast<MoEOp>(op);
    unsigned t = rankOf(moe.getInput()) - 1;
    unsigned h = t, e = t + 1, i = t + 2, is = t + 3;
    MapBuilder m{op->getContext(), t + 4};
    AffineExpr c = m.c0();
    SmallVector<IteratorType> loops(t + 1, IteratorType::parallel);
    loops.append(3, IteratorType::reduction);
    SmallVector<AffineExpr> in = m.dims(0, t), out = m.dims(0, t);
    in.push_back(c);
    out.push_back(m.d(h));
    SmallVector<AffineMap> maps;
    for (Value v : op->getOperands()) {
      if (v == moe.getInput())
        maps.push_back(m.map(in));
      else if (v == moe.getRouterWeight() || v == moe.getSharedExpertGate())
        maps.push_back(m.map({c, c}));
      else if (v == moe.getScoreBias())
        maps.push_back(m.map({c}));
      else if (v == moe.getExpertGate() || v == moe.getExpertUp())
        maps.push_back(m.map({m.d(e), m.d(i), c}));
      else if (v == moe.getExpertDown())
        maps.push_back(m.map({m.d(e), c, m.d(i)}));
      else if (v == moe.getSharedGate() || v == moe.getSharedUp())
        maps.push_back(m.map({m.d(is), c}));
      else
        maps.push_back(m.map({c, m.d(is)}));
    }
    maps.push_back(m.map(out));
    return m.finish({loops, maps, {h}});
  }
  FailureOr<ShardingOption>
  getShardingOption(Operation *op, ArrayRef<Sharding> operands,
                    ArrayRef<Sharding> results) const {
    FlatSymbolRefAttr grid = gridOf(operands, results);
    if (!grid)
      return ShardingOption::makeEmpty();
    Space s = space(op);
    ShardingArray axes = loopAxes(s, operands, results);
    unsigned t = rankOf(op->getOperand(0)) - 1;
    // The tokens (data parallelism), experts and intermediate sizes split;
    // the hidden axis and the unindexed dims stay whole.
    for (unsigned l = 0; l < axes.size(); ++l)
      if (l == t || l > t + 3)
        axes[l].clear();
    shard::removeTrailingEmptySubArray(axes);
    return ShardingOption(axes, grid);
  }
  static LogicalResult check(Operation *op, const ShardingArray &axes,
                             FlatSymbolRefAttr, SymbolTableCollection &) {
    auto moe = cast<MoEOp>(op);
    unsigned t = rankOf(moe.getInput()) - 1;
    const SmallVector<GridAxis> &e = axes[t + 1], &i = axes[t + 2],
                                &is = axes[t + 3];
    // The shared expert must be split over exactly the axes the routed
    // experts are (else it would be added once per process, or partly).
    if (moe.getSharedGate()) {
      llvm::SmallSetVector<GridAxis, 4> routed, shared;
      routed.insert(e.begin(), e.end());
      routed.insert(i.begin(), i.end());
      shared.insert(is.begin(), is.end());
      if (!llvm::set_is_subset(routed, shared) ||
          !llvm::set_is_subset(shared, routed))
        return op->emitOpError("the shared expert must be split over the "
                               "same grid axes as the routed experts "
                               "(their expert and intermediate axes)");
    }
    return success();
  }
  /// A process holding a block of the experts says so (expert_grid).
  static LogicalResult
  partitionLocal(Operation *op, ArrayRef<Value> partitioned,
                 ArrayRef<Sharding> operandShardings,
                 ArrayRef<Sharding> resultShardings, const ShardingArray &axes,
                 IRMapping &mapping, SymbolTableCollection &symbols,
                 OpBuilder &builder) {
    auto moe = cast<MoEOp>(op);
    const SmallVector<GridAxis> &e = axes[rankOf(moe.getInput())];
    if (failed(SpaceModel::partitionLocal(op, partitioned, operandShardings,
                                          resultShardings, axes, mapping,
                                          symbols, builder)))
      return failure();
    if (!e.empty()) {
      auto local = cast<MoEOp>(mapping.lookup(moe.getResult()).getDefiningOp());
      local.setExpertGridAttr(gridOf(operandShardings, resultShardings));
      local.setExpertGridAxesAttr(DenseI16ArrayAttr::get(op->getContext(), e));
    }
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Replicated ops
//===----------------------------------------------------------------------===//

/// An op the partitioner runs whole on every process: its tensor operands
/// and results are replicated (split operands are gathered first).
template <typename Op>
struct ReplicatedModel
    : public shard::ShardingInterface::ExternalModel<ReplicatedModel<Op>, Op> {
  SmallVector<IteratorType> getLoopIteratorTypes(Operation *) const {
    return {};
  }
  SmallVector<AffineMap> getIndexingMaps(Operation *) const { return {}; }
  FailureOr<ShardingOption>
  getShardingOption(Operation *, ArrayRef<Sharding> operands,
                    ArrayRef<Sharding> results) const {
    FlatSymbolRefAttr grid = gridOf(operands, results);
    if (!grid)
      return ShardingOption::makeEmpty();
    return ShardingOption({}, grid);
  }
  static std::vector<Sharding> shardings(Operation *op,
                                         const ShardingOption &o) {
    std::vector<Sharding> out;
    for (Type t : op->getOperandTypes())
      out.push_back(isa<RankedTensorType>(t) ? Sharding::get(o.grid, {})
                                             : Sharding());
    for (Type t : op->getResultTypes())
      out.push_back(isa<RankedTensorType>(t) ? Sharding::get(o.grid, {})
                                             : Sharding());
    return out;
  }
  FailureOr<std::vector<Sharding>>
  getShardingAnnotations(Operation *op, const ShardingOption &o) const {
    return shardings(op, o);
  }
  LogicalResult addShardingAnnotations(Operation *op, OpBuilder &b,
                                       const ShardingOption &o) const {
    for (OpResult r : op->getResults())
      if (isa<RankedTensorType>(r.getType()))
        shard::maybeInsertTargetShardingAnnotation(Sharding::get(o.grid, {}), r,
                                                   b);
    for (OpOperand &operand : op->getOpOperands())
      if (isa<RankedTensorType>(operand.get().getType())) {
        OpBuilder::InsertionGuard guard(b);
        shard::maybeInsertSourceShardingAnnotation(Sharding::get(o.grid, {}),
                                                   operand, b);
      }
    return success();
  }
  LogicalResult partition(Operation *op, ArrayRef<Value> partitioned,
                          ArrayRef<Sharding> operandShardings,
                          ArrayRef<Sharding> resultShardings,
                          IRMapping &mapping, SymbolTableCollection &symbols,
                          OpBuilder &builder) const {
    for (const Sharding &s :
         llvm::concat<const Sharding>(operandShardings, resultShardings))
      if (s && !shard::isFullReplication(s))
        return op->emitOpError("is not partitioned: its operands and results "
                               "must be replicated");
    builder.clone(*op, mapping);
    return success();
  }
};

template <typename... Ops> void attachReplicated(MLIRContext *ctx) {
  (Ops::template attachInterface<ReplicatedModel<Ops>>(*ctx), ...);
}

template <typename... Ops> void attachElementwise(MLIRContext *ctx) {
  (Ops::template attachInterface<shard::ElementwiseShardingInterface<Ops>>(
       *ctx),
   ...);
}

} // namespace

void registerShardingInterfaceExternalModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, DSDialect *) {
    ctx->getOrLoadDialect<shard::ShardDialect>();
    ParamOp::attachInterface<ParamModel>(*ctx);
    RMSNormOp::attachInterface<RMSNormModel>(*ctx);
    LinearOp::attachInterface<LinearModel>(*ctx);
    MulOp::attachInterface<MulModel>(*ctx);
    SplitHeadsOp::attachInterface<SplitHeadsModel>(*ctx);
    MergeHeadsOp::attachInterface<MergeHeadsModel>(*ctx);
    SplitOp::attachInterface<SplitModel>(*ctx);
    RopeOp::attachInterface<RopeModel>(*ctx);
    AttentionOp::attachInterface<AttentionModel>(*ctx);
    MLAAttentionOp::attachInterface<MLAAttentionModel>(*ctx);
    CacheUpdateOp::attachInterface<CacheUpdateModel>(*ctx);
    EmbeddingOp::attachInterface<EmbeddingModel>(*ctx);
    MoEOp::attachInterface<MoEModel>(*ctx);
    attachElementwise<SwiGLUOp, ActivationOp>(ctx);
    attachReplicated<RouterOp, MoEDispatchOp, GroupedMatmulOp, MoECombineOp,
                     FusedLinearOp, FusedRouterOp, FusedMoEOp,
                     FusedElementwiseOp, ConcatWeightsOp, QuantizeOp,
                     DequantizeOp>(ctx);
  });
  registry.addExtension(+[](MLIRContext *ctx, arith::ArithDialect *) {
    attachElementwise<arith::AddFOp, arith::SubFOp, arith::MulFOp,
                      arith::DivFOp, arith::MaximumFOp, arith::MinimumFOp,
                      arith::NegFOp, arith::ExtFOp, arith::TruncFOp>(ctx);
  });
  // Deduplicated by the registry when upstream's registerAllExtensions
  // adds them too.
  func::registerShardingInterfaceExternalModels(registry);
  tensor::registerShardingInterfaceExternalModels(registry);
}

} // namespace ds
