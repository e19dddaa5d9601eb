//===- FuseHorizontalProjections.cpp - merge sibling projections ----------===//
//
// Groups ds.linear ops (and ds.grouped_matmul ops) by their input, merges
// each group into one op over concatenated weights, and splits the result
// back. The grouping is a walk over values rather than a rewrite pattern
// because one rewrite consumes a whole set of sibling ops.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/passes/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Dominance.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define DEBUG_TYPE "ds-fuse-horizontal"

namespace ds {
#define GEN_PASS_DEF_FUSEHORIZONTALPROJECTIONSPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {

/// What a merged op needs from each member: its weight, optional bias and
/// result.
struct Member {
  Operation *op;
  Value weight, bias;
};

/// The siblings of `anchor` (ops of kind OpT in its block that read the same
/// input, and offsets for grouped matmuls), in block order, restricted to
/// those that can be merged with the first of them.
template <typename OpT>
SmallVector<Member> collectSiblings(OpT anchor, DominanceInfo &dom,
                                    int64_t weightAxis) {
  Value input = anchor.getInput();
  SmallVector<OpT> ops;
  for (Operation *user : input.getUsers())
    if (auto op = dyn_cast<OpT>(user))
      if (op.getInput() == input && op->getBlock() == anchor->getBlock())
        ops.push_back(op);
  llvm::sort(ops, [](OpT a, OpT b) { return a->isBeforeInBlock(b); });
  SmallVector<Member> members;
  if (ops.size() < 2)
    return members;
  Operation *first = ops.front();
  for (OpT op : ops) {
    Member m{op, op.getWeight(), Value()};
    if constexpr (std::is_same_v<OpT, LinearOp>)
      m.bias = op.getBias();
    else if (op.getOffsets() != anchor.getOffsets())
      continue;
    // Biases are plain tensors; quantized or sparse weights are joined by
    // ds.concat_weights (checked below, once all members are known).
    if (m.bias && !isa<RankedTensorType>(m.bias.getType()))
      continue;
    // The split needs every member's static width.
    if (ShapedType::isDynamic(
            getLogicalTensorType(m.weight.getType()).getDimSize(weightAxis)))
      continue;
    // Weights are usually ds.param ops emitted right before their linear:
    // operand-free pure ops can move up to the first sibling.
    auto available = [&](Value v) {
      if (!v || dom.properlyDominates(v, first))
        return true;
      Operation *def = v.getDefiningOp();
      return def && def->getBlock() == first->getBlock() &&
             def->getNumOperands() == 0 && def->getNumRegions() == 0 &&
             isPure(def);
    };
    if (!available(m.weight) || !available(m.bias))
      continue;
    members.push_back(m);
  }
  // One weight element type, biases on all or none and of one element type.
  if (!members.empty()) {
    auto eltOf = [](Value v) {
      return v ? getLogicalTensorType(v.getType()).getElementType() : Type();
    };
    Type weightElt = eltOf(members[0].weight);
    Type biasElt = eltOf(members[0].bias);
    llvm::erase_if(members, [&](const Member &m) {
      return eltOf(m.weight) != weightElt || eltOf(m.bias) != biasElt;
    });
  }
  // Quantized or sparse weights must be joinable by ds.concat_weights.
  if (!members.empty() && !isa<RankedTensorType>(members[0].weight.getType())) {
    SmallVector<Value> weights;
    for (const Member &m : members)
      weights.push_back(m.weight);
    if (!canConcatWeights(weights, weightAxis))
      members.clear();
  }
  if (members.size() < 2) {
    members.clear();
    return members;
  }
  for (const Member &m : members)
    for (Value v : {m.weight, m.bias})
      if (v && !dom.properlyDominates(v, first))
        v.getDefiningOp()->moveBefore(first);
  return members;
}

Value concat(OpBuilder &b, Location loc, ArrayRef<Value> values, int64_t dim) {
  if (!isa<RankedTensorType>(values.front().getType()))
    return ConcatWeightsOp::create(b, loc, values, dim);
  return tensor::ConcatOp::create(b, loc, dim, values);
}

/// Replaces the members with one op built by `build` from the concatenated
/// weight and bias, and a split along `axis` of its result.
void merge(ArrayRef<Member> members, int64_t weightAxis,
           function_ref<Value(OpBuilder &, Location, Value, Value)> build) {
  Operation *first = members.front().op;
  OpBuilder b(first);
  Location loc = first->getLoc();
  SmallVector<Value> weights, biases;
  SmallVector<int64_t> sizes;
  for (const Member &m : members) {
    weights.push_back(m.weight);
    if (m.bias)
      biases.push_back(m.bias);
    sizes.push_back(
        getLogicalTensorType(m.weight.getType()).getDimSize(weightAxis));
  }
  Value weight = concat(b, loc, weights, weightAxis);
  Value bias = biases.empty() ? Value() : concat(b, loc, biases, 0);
  Value merged = build(b, loc, weight, bias);
  int64_t axis = cast<ShapedType>(merged.getType()).getRank() - 1;
  auto split = SplitOp::create(b, loc, merged, axis, sizes);
  for (auto [m, part] : llvm::zip(members, split.getResults())) {
    Value replacement = part;
    Type want = m.op->getResult(0).getType();
    if (replacement.getType() != want)
      replacement = tensor::CastOp::create(b, loc, want, replacement);
    m.op->getResult(0).replaceAllUsesWith(replacement);
    m.op->erase();
  }
}

} // namespace

bool ds::fuseHorizontalProjections(Operation *root, bool groupedMatmuls) {
  // Merge one group at a time and walk again: a merge erases ops whose
  // results may be the inputs of groups found later.
  bool changed = false;
  while (true) {
    DominanceInfo dom(root);
    bool merged = false;
    root->walk([&](Operation *op) {
      if (auto l = dyn_cast<LinearOp>(op)) {
        SmallVector<Member> members = collectSiblings(l, dom, 0);
        if (members.empty())
          return WalkResult::advance();
        Value input = l.getInput();
        merge(members, 0, [&](OpBuilder &b, Location loc, Value w, Value bias) {
          return LinearOp::create(b, loc, input, w, bias).getResult();
        });
      } else if (auto g = dyn_cast<GroupedMatmulOp>(op); g && groupedMatmuls) {
        SmallVector<Member> members = collectSiblings(g, dom, 1);
        if (members.empty())
          return WalkResult::advance();
        Value input = g.getInput(), offsets = g.getOffsets();
        merge(members, 1, [&](OpBuilder &b, Location loc, Value w, Value) {
          return GroupedMatmulOp::create(b, loc, input, w, offsets).getResult();
        });
      } else {
        return WalkResult::advance();
      }
      merged = true;
      return WalkResult::interrupt();
    });
    if (!merged)
      return changed;
    changed = true;
  }
}

namespace {
struct FuseHorizontalProjectionsPass
    : public ds::impl::FuseHorizontalProjectionsPassBase<
          FuseHorizontalProjectionsPass> {
  using Base::Base;
  void runOnOperation() override {
    fuseHorizontalProjections(getOperation(), fuseGroupedMatmuls);
  }
};
} // namespace
