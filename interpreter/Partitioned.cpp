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

bool EmulatedCollectives::barrier(std::unique_lock<std::mutex> &lock, Group &g,
                                  int64_t size) {
  uint64_t gen = g.generation;
  if (++g.waiting == size) {
    g.waiting = 0;
    ++g.generation;
    arrived.notify_all();
    return true;
  }
  waitFor(lock, [&] { return g.generation != gen; });
  return g.generation != gen;
}

void EmulatedCollectives::waitFor(std::unique_lock<std::mutex> &lock,
                                  const std::function<bool()> &ready) {
  if (ready() || aborted)
    return;
  waiting.push_back(&ready);
  if (static_cast<int64_t>(waiting.size()) + done == grid.size() &&
      llvm::none_of(waiting,
                    [](const std::function<bool()> *w) { return (*w)(); })) {
    deadlock = aborted = true;
    arrived.notify_all();
  }
  arrived.wait(lock, [&] { return ready() || aborted; });
  waiting.erase(llvm::find(waiting, &ready));
}

void EmulatedCollectives::finished() {
  std::lock_guard<std::mutex> lock(mutex);
  ++done;
  // The processes left may all be waiting, for this one.
  if (static_cast<int64_t>(waiting.size()) + done == grid.size() &&
      !waiting.empty() &&
      llvm::none_of(waiting,
                    [](const std::function<bool()> *w) { return (*w)(); }))
    deadlock = aborted = true;
  arrived.notify_all();
}

FailureOr<std::vector<Tensor>>
EmulatedCollectives::exchange(int64_t rank, ArrayRef<int16_t> axes,
                              const Tensor &mine) {
  std::unique_lock<std::mutex> lock(mutex);
  if (aborted)
    return failure();
  SmallVector<int64_t> members = grid.group(rank, axes);
  const int64_t size = static_cast<int64_t>(members.size());
  Group &g =
      groups[{std::vector<int16_t>(axes.begin(), axes.end()), members[0]}];
  g.slots.resize(size);
  g.slots[llvm::find(members, rank) - members.begin()] = mine;
  if (!barrier(lock, g, size))
    return failure();
  std::vector<Tensor> out = g.slots;
  // Nobody hands in the next collective's tensor before all have read.
  if (!barrier(lock, g, size))
    return failure();
  return out;
}

LogicalResult EmulatedCollectives::send(int64_t from, int64_t to,
                                        const Tensor &t) {
  std::lock_guard<std::mutex> lock(mutex);
  if (aborted)
    return failure();
  mailboxes[{from, to}].push_back(t);
  arrived.notify_all();
  return success();
}

FailureOr<Tensor> EmulatedCollectives::recv(int64_t from, int64_t to) {
  std::unique_lock<std::mutex> lock(mutex);
  std::deque<Tensor> &box = mailboxes[{from, to}];
  waitFor(lock, [&] { return !box.empty(); });
  if (box.empty())
    return failure();
  Tensor t = std::move(box.front());
  box.pop_front();
  return t;
}

void EmulatedCollectives::abort() {
  std::lock_guard<std::mutex> lock(mutex);
  aborted = true;
  arrived.notify_all();
}

} // namespace ds
