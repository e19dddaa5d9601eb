//===- ProcessGrid.h - the processes of a partitioned module ------*- C++
//-*-===//
//
// A module partitioned by ds-partition runs as one program per process of
// its `shard.grid`. `ProcessGrid` maps a value split over grid axes to the
// processes' blocks and back; `loadShard` reads a sharded ds.param's block
// for one process (the interpreter, and codegen compiling one process's
// program, read weights through it).
//
//===----------------------------------------------------------------------===//

#ifndef DS_WEIGHTS_PROCESSGRID_H
#define DS_WEIGHTS_PROCESSGRID_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/weights/Weights.h"

#include "mlir/IR/BuiltinOps.h"

#include <optional>

namespace ds {

/// A module's process grid: processes are numbered row-major over its axes.
class ProcessGrid {
public:
  /// The module's grid: none when it has no `shard.grid`; an error (at the
  /// grid) when it has several or one of dynamic size.
  static FailureOr<std::optional<ProcessGrid>> of(ModuleOp module);

  explicit ProcessGrid(ArrayRef<int64_t> shape)
      : dims(shape.begin(), shape.end()) {}
  ArrayRef<int64_t> shape() const { return dims; }
  int64_t size() const;
  /// Process `rank`'s index along `axes`, row-major in the order listed.
  int64_t indexAlong(int64_t rank, ArrayRef<int16_t> axes) const;
  /// The number of processes along `axes`.
  int64_t sizeAlong(ArrayRef<int16_t> axes) const;
  /// Whether `axes` are axes of this grid, ascending and each once (what
  /// indexAlong and sizeAlong take).
  bool hasAxes(ArrayRef<int16_t> axes) const;
  /// Process `rank`'s block when `local` consecutive items (experts, rows
  /// of a vocabulary) are dealt to each process along `axes`: its first
  /// item and the number of all of them. None when `axes` are not hasAxes.
  struct Block {
    int64_t first = 0, whole = 0;
  };
  std::optional<Block> blockAlong(int64_t rank, ArrayRef<int16_t> axes,
                                  int64_t local) const;
  /// The place in a group along `axes` (hasAxes) of the process at
  /// coordinates `index` along them (row-major, what group() orders by);
  /// none when the index has another length or leaves an axis.
  std::optional<int64_t> placeAlong(ArrayRef<int16_t> axes,
                                    ArrayRef<int64_t> index) const;
  /// The processes that differ from `rank` only along `axes`, in the order
  /// of their index along them.
  SmallVector<int64_t> group(int64_t rank, ArrayRef<int16_t> axes) const;

  /// The shape of one block of a value of shape `whole` split by `split`;
  /// fails when a dimension does not divide evenly.
  FailureOr<SmallVector<int64_t>>
  blockShape(ArrayRef<int64_t> whole,
             ArrayRef<SmallVector<int16_t>> split) const;
  /// The whole shape from one block's.
  SmallVector<int64_t> wholeShape(ArrayRef<int64_t> block,
                                  ArrayRef<SmallVector<int16_t>> split) const;
  /// Process `rank`'s block of `whole`.
  Tensor block(const Tensor &whole, ArrayRef<SmallVector<int16_t>> split,
               int64_t rank) const;
  /// The whole value from every process's block (blocks[rank]).
  Tensor assemble(ArrayRef<Tensor> blocks,
                  ArrayRef<SmallVector<int16_t>> split) const;

private:
  SmallVector<int64_t> dims;
};

/// `t[offsets : offsets + sizes]`, and its inverse (writes `block` into
/// `t` at `offsets`).
Tensor extractBlock(const Tensor &t, ArrayRef<int64_t> offsets,
                    ArrayRef<int64_t> sizes);
void insertBlock(Tensor &t, const Tensor &block, ArrayRef<int64_t> offsets);

/// The block of the sharded param `op` that process `rank` holds, read by
/// `loadWhole` (given an unsharded twin of the op) and cut. A split of the
/// leading axis (a block of experts, of rows) reads only the process's
/// slices (the twin selects them). Splits of other axes (row-parallel
/// projections: a block of each row) are read run by run through
/// `readRange` (elements [begin, end) of the twin, row-major, into `dst`)
/// when it is given and the param is a float tensor; else whole, then cut.
/// Not safe to call from several threads at once (the twin is an op of the
/// context).
FailureOr<Tensor>
loadShard(ParamOp op, int64_t rank,
          function_ref<FailureOr<Tensor>(ParamOp whole)> loadWhole,
          function_ref<LogicalResult(ParamOp whole, int64_t begin, int64_t end,
                                     float *dst)>
              readRange = nullptr);

} // namespace ds

#endif // DS_WEIGHTS_PROCESSGRID_H
