//===- ProcessGrid.cpp - the processes of a partitioned module ------------===//

#include "ds/weights/ProcessGrid.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Shard/IR/ShardOps.h"
#include "mlir/IR/SymbolTable.h"

namespace ds {

FailureOr<std::optional<ProcessGrid>> ProcessGrid::of(ModuleOp module) {
  SmallVector<shard::GridOp> grids(module.getOps<shard::GridOp>());
  if (grids.empty())
    return std::optional<ProcessGrid>();
  if (grids.size() > 1)
    return grids[1].emitError("a partitioned module has one process grid");
  for (int64_t d : grids[0].getShape())
    if (ShapedType::isDynamic(d) || d < 1)
      return grids[0].emitError("the process grid needs a static shape");
  return std::optional<ProcessGrid>(ProcessGrid(grids[0].getShape()));
}

int64_t ProcessGrid::size() const {
  int64_t n = 1;
  for (int64_t d : dims)
    n *= d;
  return n;
}

int64_t ProcessGrid::indexAlong(int64_t rank, ArrayRef<int16_t> axes) const {
  // Row-major multi-index of `rank`.
  SmallVector<int64_t> index(dims.size());
  for (int64_t a = static_cast<int64_t>(dims.size()) - 1; a >= 0; --a) {
    index[a] = rank % dims[a];
    rank /= dims[a];
  }
  int64_t i = 0;
  for (int16_t a : axes)
    i = i * dims[a] + index[a];
  return i;
}

bool ProcessGrid::hasAxes(ArrayRef<int16_t> axes) const {
  for (size_t i = 0; i < axes.size(); ++i)
    if (axes[i] < 0 || axes[i] >= static_cast<int64_t>(dims.size()) ||
        (i > 0 && axes[i] <= axes[i - 1]))
      return false;
  return true;
}

std::optional<ProcessGrid::Block>
ProcessGrid::blockAlong(int64_t rank, ArrayRef<int16_t> axes,
                        int64_t local) const {
  if (!hasAxes(axes))
    return std::nullopt;
  return Block{indexAlong(rank, axes) * local, sizeAlong(axes) * local};
}

int64_t ProcessGrid::sizeAlong(ArrayRef<int16_t> axes) const {
  int64_t n = 1;
  for (int16_t a : axes)
    n *= dims[a];
  return n;
}

std::optional<int64_t> ProcessGrid::placeAlong(ArrayRef<int16_t> axes,
                                               ArrayRef<int64_t> index) const {
  if (index.size() != axes.size() || !hasAxes(axes))
    return std::nullopt;
  int64_t place = 0;
  for (auto [axis, i] : llvm::zip(axes, index)) {
    if (i < 0 || i >= dims[axis])
      return std::nullopt;
    place = place * dims[axis] + i;
  }
  return place;
}

SmallVector<int64_t> ProcessGrid::group(int64_t rank,
                                        ArrayRef<int16_t> axes) const {
  SmallVector<int64_t> members(sizeAlong(axes), -1);
  for (int64_t r = 0; r < size(); ++r) {
    bool same = true;
    for (int64_t a = 0; a < static_cast<int64_t>(dims.size()) && same; ++a)
      if (!llvm::is_contained(axes, a))
        same = indexAlong(r, {static_cast<int16_t>(a)}) ==
               indexAlong(rank, {static_cast<int16_t>(a)});
    if (same)
      members[indexAlong(r, axes)] = r;
  }
  return members;
}

FailureOr<SmallVector<int64_t>>
ProcessGrid::blockShape(ArrayRef<int64_t> whole,
                        ArrayRef<SmallVector<int16_t>> split) const {
  SmallVector<int64_t> shape(whole);
  for (auto [d, axes] : llvm::enumerate(split)) {
    int64_t n = sizeAlong(axes);
    if (d >= shape.size() || shape[d] % n != 0)
      return failure();
    shape[d] /= n;
  }
  return shape;
}

SmallVector<int64_t>
ProcessGrid::wholeShape(ArrayRef<int64_t> block,
                        ArrayRef<SmallVector<int16_t>> split) const {
  SmallVector<int64_t> shape(block);
  for (auto [d, axes] : llvm::enumerate(split))
    if (d < shape.size() && !ShapedType::isDynamic(shape[d]))
      shape[d] *= sizeAlong(axes);
  return shape;
}

/// Calls visit(at, flat) for each element of the block of a `wholeShape`
/// value at `offsets` with shape `sizes`: `at` indexes the whole value,
/// `flat` the row-major block.
template <typename Visit>
static void forEachBlockElement(ArrayRef<int64_t> wholeShape,
                                ArrayRef<int64_t> offsets,
                                ArrayRef<int64_t> sizes, Visit visit) {
  int64_t rank = sizes.size(), n = 1;
  for (int64_t d : sizes)
    n *= d;
  SmallVector<int64_t> idx(rank, 0);
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t at = 0;
    for (int64_t d = 0; d < rank; ++d)
      at = at * wholeShape[d] + offsets[d] + idx[d];
    visit(at, flat);
    for (int64_t d = rank - 1; d >= 0 && ++idx[d] == sizes[d]; --d)
      idx[d] = 0;
  }
}

Tensor extractBlock(const Tensor &t, ArrayRef<int64_t> offsets,
                    ArrayRef<int64_t> sizes) {
  Tensor out = t.isInt ? Tensor::ints(sizes) : Tensor::floats(sizes);
  forEachBlockElement(t.shape, offsets, sizes, [&](int64_t at, int64_t flat) {
    if (t.isInt)
      out.i[flat] = t.i[at];
    else
      out.f[flat] = t.f[at];
  });
  return out;
}

void insertBlock(Tensor &t, const Tensor &block, ArrayRef<int64_t> offsets) {
  forEachBlockElement(t.shape, offsets, block.shape,
                      [&](int64_t at, int64_t flat) {
                        if (t.isInt)
                          t.i[at] = block.i[flat];
                        else
                          t.f[at] = block.f[flat];
                      });
}

Tensor ProcessGrid::block(const Tensor &whole,
                          ArrayRef<SmallVector<int16_t>> split,
                          int64_t rank) const {
  SmallVector<int64_t> sizes(whole.shape), offsets(whole.shape.size(), 0);
  for (auto [d, axes] : llvm::enumerate(split)) {
    sizes[d] /= sizeAlong(axes);
    offsets[d] = indexAlong(rank, axes) * sizes[d];
  }
  return extractBlock(whole, offsets, sizes);
}

Tensor ProcessGrid::assemble(ArrayRef<Tensor> blocks,
                             ArrayRef<SmallVector<int16_t>> split) const {
  SmallVector<int64_t> shape = wholeShape(blocks[0].shape, split);
  Tensor whole = blocks[0].isInt ? Tensor::ints(shape) : Tensor::floats(shape);
  for (auto [rank, b] : llvm::enumerate(blocks)) {
    SmallVector<int64_t> offsets(shape.size(), 0);
    for (auto [d, axes] : llvm::enumerate(split))
      offsets[d] = indexAlong(rank, axes) * b.shape[d];
    insertBlock(whole, b, offsets);
  }
  return whole;
}

FailureOr<Tensor>
loadShard(ParamOp op, int64_t rank,
          function_ref<FailureOr<Tensor>(ParamOp whole)> loadWhole,
          function_ref<LogicalResult(ParamOp whole, int64_t begin, int64_t end,
                                     float *dst)>
              readRange) {
  auto gridOp =
      SymbolTable::lookupNearestSymbolFrom<shard::GridOp>(op, op.getGridAttr());
  if (!gridOp)
    return op.emitError() << "the grid " << op.getGridAttr()
                          << " of a sharded weight is not in the module";
  ProcessGrid grid(gridOp.getShape());
  if (rank < 0 || rank >= grid.size())
    return op.emitError() << "process " << rank << " is not on the grid of "
                          << grid.size() << " processes";
  SmallVector<SmallVector<int16_t>> split;
  for (shard::GridAxesAttr dim : op.getSplitAxesAttr().getAxes())
    split.emplace_back(dim.asArrayRef());
  auto local = cast<RankedTensorType>(op.getType());
  SmallVector<int64_t> wholeShape = grid.wholeShape(local.getShape(), split);
  OpBuilder b(op.getContext());
  DenseI64ArrayAttr select = op.getSelectAttr();
  if (!split.empty() && !split.front().empty() && local.getRank() >= 1) {
    // Split along the leading axis (experts, rows): read only this
    // process's slices (a select of them, composed with the param's own),
    // then cut the other axes.
    const int64_t count = local.getDimSize(0);
    const int64_t first = grid.indexAlong(rank, split.front()) * count;
    SmallVector<int64_t> slices;
    for (int64_t i = 0; i < count; ++i)
      slices.push_back(op.getSourceIndex(first + i));
    select = b.getDenseI64ArrayAttr(slices);
    wholeShape[0] = count;
    split.front().clear();
  }
  auto whole = RankedTensorType::get(wholeShape, local.getElementType());
  auto twin = ParamOp::create(b, op.getLoc(), whole, op.getNameAttr(), select,
                              op.getScalesAttr(), op.getZeroPointsAttr(),
                              op.getMetaAttr(), FlatSymbolRefAttr(),
                              shard::GridAxesArrayAttr());
  const bool otherAxes =
      llvm::any_of(split, [](ArrayRef<int16_t> axes) { return !axes.empty(); });
  if (readRange && otherAxes && isa<RankedTensorType>(op.getType()) &&
      local.getRank() >= 1) {
    // The block's runs along the last axis, each contiguous in the twin.
    const int64_t rankOf = local.getRank();
    SmallVector<int64_t> offset(rankOf, 0), stride(rankOf, 1);
    for (int64_t d = 0; d < rankOf; ++d)
      if (d < static_cast<int64_t>(split.size()) && !split[d].empty())
        offset[d] = grid.indexAlong(rank, split[d]) * local.getDimSize(d);
    for (int64_t d = rankOf - 1; d > 0; --d)
      stride[d - 1] = stride[d] * wholeShape[d];
    Tensor out = Tensor::floats(local.getShape());
    const int64_t run = local.getDimSize(rankOf - 1);
    const int64_t runs = run ? out.numElements() / run : 0;
    SmallVector<int64_t> index(rankOf, 0);
    LogicalResult ok = success();
    for (int64_t r = 0; r < runs && succeeded(ok); ++r) {
      int64_t begin = offset[rankOf - 1];
      for (int64_t d = 0; d + 1 < rankOf; ++d)
        begin += (index[d] + offset[d]) * stride[d];
      ok = readRange(twin, begin, begin + run, out.f.data() + r * run);
      // The next run: the odometer over the leading axes.
      for (int64_t d = rankOf - 2; d >= 0; --d) {
        if (++index[d] < local.getDimSize(d))
          break;
        index[d] = 0;
      }
    }
    twin->erase();
    if (failed(ok))
      return failure();
    return out;
  }
  FailureOr<Tensor> t = loadWhole(twin);
  twin->erase();
  if (failed(t))
    return failure();
  return grid.block(*t, split, rank);
}

} // namespace ds
