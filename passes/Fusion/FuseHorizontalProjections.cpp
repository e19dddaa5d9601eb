//===- FuseHorizontalProjections.cpp - merge sibling projections ----------===//
//
// Groups ds.linear ops (and ds.grouped_matmul ops) by their input, merges
// each group into one op over concatenated weights, and splits the result
// back. The grouping is a walk over values rather than a rewrite pattern
// because one rewrite consumes a whole set of sibling ops.
//
//===----------------------------------------------------------------------===//

#include "dialects/DS/IR/DSOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Dominance.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define DEBUG_TYPE "ds-fuse-horizontal"

namespace mlir::ds {
#define GEN_PASS_DEF_FUSEHORIZONTALPROJECTIONSPASS
#include "passes/Passes.h.inc"
} // namespace mlir::ds

using namespace mlir;
using namespace mlir::ds;

namespace {

/// What a merged op needs from each member: its weight, optional bias and
/// result.
struct Member {
  Operation *op;
  Value weight, bias;
};

/// The users of `input` of kind OpT that read it as their input, in block
/// order, restricted to those whose operands all dominate the first one.
template <typename OpT>
SmallVector<Member> collectSiblings(Value input, Value offsets,
                                    DominanceInfo &dom) {
  SmallVector<OpT> ops;
  for (Operation *user : input.getUsers())
    if (auto op = dyn_cast<OpT>(user))
      if (op.getInput() == input)
        ops.push_back(op);
  llvm::sort(ops, [](OpT a, OpT b) {
    return a->getBlock() == b->getBlock() ? a->isBeforeInBlock(b)
                                          : a.getOperation() < b.getOperation();
  });
  SmallVector<Member> members;
  if (ops.size() < 2)
    return members;
  Operation *first = ops.front();
  for (OpT op : ops) {
    if (op->getBlock() != first->getBlock())
      continue;
    Member m{op, op.getWeight(), Value()};
    if constexpr (std::is_same_v<OpT, LinearOp>)
      m.bias = op.getBias();
    else if (op.getOffsets() != offsets)
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
    for (Value v : {m.weight, m.bias})
      if (v && !dom.properlyDominates(v, first))
        v.getDefiningOp()->moveBefore(first);
    members.push_back(m);
  }
  // One weight element type, and biases on all or none.
  if (!members.empty()) {
    Type elt = cast<ShapedType>(members[0].weight.getType()).getElementType();
    bool biased = static_cast<bool>(members[0].bias);
    llvm::erase_if(members, [&](const Member &m) {
      return cast<ShapedType>(m.weight.getType()).getElementType() != elt ||
             static_cast<bool>(m.bias) != biased;
    });
  }
  if (members.size() < 2)
    members.clear();
  return members;
}

Value concat(OpBuilder &b, Location loc, ArrayRef<Value> values, int64_t dim) {
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
        cast<ShapedType>(m.weight.getType()).getDimSize(weightAxis));
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

bool mlir::ds::fuseHorizontalProjections(Operation *root, bool groupedMatmuls) {
  DominanceInfo dom(root);
  bool changed = false;
  // Collect candidate inputs first: merging rewrites the IR being walked.
  SetVector<Value> linearInputs;
  SetVector<std::pair<Value, Value>> groupedInputs;
  root->walk([&](Operation *op) {
    if (auto l = dyn_cast<LinearOp>(op))
      linearInputs.insert(l.getInput());
    else if (auto g = dyn_cast<GroupedMatmulOp>(op); g && groupedMatmuls)
      groupedInputs.insert({g.getInput(), g.getOffsets()});
  });
  for (Value input : linearInputs) {
    SmallVector<Member> members = collectSiblings<LinearOp>(input, {}, dom);
    if (members.empty())
      continue;
    merge(members, 0, [&](OpBuilder &b, Location loc, Value w, Value bias) {
      return LinearOp::create(b, loc, input, w, bias).getResult();
    });
    changed = true;
  }
  for (auto [input, offsets] : groupedInputs) {
    SmallVector<Member> members =
        collectSiblings<GroupedMatmulOp>(input, offsets, dom);
    if (members.empty())
      continue;
    Value off = offsets;
    merge(members, 1, [&](OpBuilder &b, Location loc, Value w, Value) {
      return GroupedMatmulOp::create(b, loc, input, w, off).getResult();
    });
    changed = true;
  }
  return changed;
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
