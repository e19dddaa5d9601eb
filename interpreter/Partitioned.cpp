//===- Partitioned.cpp - the processes of a partitioned program -----------===//

#include "ds/interpreter/Partitioned.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace ds {

RankedTensorType wholeArgumentType(func::FuncOp fn, unsigned i) {
  auto type = cast<RankedTensorType>(fn.getArgumentTypes()[i]);
  FailureOr<std::optional<ProcessGrid>> grid =
      ProcessGrid::of(fn->getParentOfType<ModuleOp>());
  if (failed(grid) || !*grid)
    return type;
  return RankedTensorType::get(
      (*grid)->wholeShape(type.getShape(), argumentSplitAxes(fn, i)),
      type.getElementType());
}

bool EmulatedCollectives::barrier(std::unique_lock<std::mutex> &lock) {
  uint64_t gen = generation;
  if (++waiting == grid.size()) {
    waiting = 0;
    ++generation;
    arrived.notify_all();
    return true;
  }
  arrived.wait(lock, [&] { return generation != gen || aborted; });
  return generation != gen;
}

FailureOr<std::vector<Tensor>>
EmulatedCollectives::exchange(int64_t rank, ArrayRef<int16_t> axes,
                              const Tensor &mine) {
  std::unique_lock<std::mutex> lock(mutex);
  if (aborted)
    return failure();
  slots[rank] = mine;
  if (!barrier(lock))
    return failure();
  std::vector<Tensor> members;
  for (int64_t r : grid.group(rank, axes))
    members.push_back(slots[r]);
  // Nobody hands in the next collective's tensor before all have read.
  if (!barrier(lock))
    return failure();
  return members;
}

void EmulatedCollectives::abort() {
  std::lock_guard<std::mutex> lock(mutex);
  aborted = true;
  arrived.notify_all();
}

} // namespace ds
