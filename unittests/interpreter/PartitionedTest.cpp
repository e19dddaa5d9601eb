//===- PartitionedTest.cpp - process grids and emulated collectives -------===//
//
// How a value split over grid axes maps to the processes' blocks (the
// convention sharded params, ds.split_axes and the collectives share:
// processes row-major over the grid, a dimension split over several axes in
// the order listed), and the rendezvous the interpreter's threads use.
//
//===----------------------------------------------------------------------===//

#include "ds/interpreter/Partitioned.h"

#include <gtest/gtest.h>

#include <numeric>
#include <thread>

namespace {

using ds::EmulatedCollectives;
using ds::ProcessGrid;
using ds::Tensor;

Tensor iota(llvm::ArrayRef<int64_t> shape) {
  Tensor t = Tensor::floats(shape);
  std::iota(t.f.begin(), t.f.end(), 0.0f);
  return t;
}

TEST(ProcessGrid, IndicesAndGroupsAreRowMajor) {
  ProcessGrid grid({2, 3}); // rank = 3 * i + j
  EXPECT_EQ(grid.size(), 6);
  EXPECT_EQ(grid.indexAlong(4, {0}), 1);
  EXPECT_EQ(grid.indexAlong(4, {1}), 1);
  EXPECT_EQ(grid.indexAlong(5, {0, 1}), 5);
  EXPECT_EQ(grid.indexAlong(5, {1, 0}), 2 * 2 + 1);
  EXPECT_EQ(grid.sizeAlong({1}), 3);
  EXPECT_EQ(grid.group(4, {1}), (llvm::SmallVector<int64_t>{3, 4, 5}));
  EXPECT_EQ(grid.group(4, {0}), (llvm::SmallVector<int64_t>{1, 4}));
  EXPECT_EQ(grid.group(2, {}), (llvm::SmallVector<int64_t>{2}));
  EXPECT_EQ(grid.placeAlong({1}, {2}), 2);
  EXPECT_EQ(grid.placeAlong({0, 1}, {1, 2}), 5);
  EXPECT_EQ(grid.placeAlong({0}, {2}), std::nullopt);
  EXPECT_EQ(grid.placeAlong({0}, {0, 1}), std::nullopt);
  EXPECT_EQ(grid.placeAlong({1, 0}, {0, 0}), std::nullopt);
}

TEST(ProcessGrid, BlocksAssembleTheWholeValue) {
  ProcessGrid grid({2, 3});
  Tensor whole = iota({4, 6, 2});
  for (auto split : std::vector<llvm::SmallVector<llvm::SmallVector<int16_t>>>{
           {{0}, {1}}, {{}, {1, 0}}, {{}, {1}}, {}}) {
    std::vector<Tensor> blocks;
    for (int64_t r = 0; r < grid.size(); ++r)
      blocks.push_back(grid.block(whole, split, r));
    Tensor back = grid.assemble(blocks, split);
    EXPECT_EQ(back.shape, whole.shape);
    EXPECT_EQ(back.f, whole.f);
  }
  // Rank 4 (i = 1, j = 1) of [[0], [1]] holds rows 2..3, columns 2..3.
  Tensor b = grid.block(whole, {{0}, {1}}, 4);
  EXPECT_EQ(b.shape, (llvm::SmallVector<int64_t>{2, 2, 2}));
  EXPECT_EQ(b.f[0], whole.f[(2 * 6 + 2) * 2]);
  EXPECT_TRUE(failed(grid.blockShape({5, 6}, {{0}})));
  EXPECT_EQ(*grid.blockShape({4, 6}, {{}, {0, 1}}),
            (llvm::SmallVector<int64_t>{4, 1}));
}

TEST(EmulatedCollectives, EachProcessGetsItsGroupInOrder) {
  ProcessGrid grid({2, 2});
  EmulatedCollectives collectives(grid);
  std::vector<std::vector<float>> seen(4), seenAll(4);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 4; ++r)
    threads.emplace_back([&, r] {
      Tensor mine = Tensor::floats({1});
      mine.f[0] = static_cast<float>(r);
      auto row = collectives.exchange(r, {1}, mine);
      auto all = collectives.exchange(r, {0, 1}, mine);
      ASSERT_TRUE(succeeded(row) && succeeded(all));
      for (const Tensor &t : *row)
        seen[r].push_back(t.f[0]);
      for (const Tensor &t : *all)
        seenAll[r].push_back(t.f[0]);
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(seen[0], (std::vector<float>{0, 1}));
  EXPECT_EQ(seen[3], (std::vector<float>{2, 3}));
  for (int r = 0; r < 4; ++r)
    EXPECT_EQ(seenAll[r], (std::vector<float>{0, 1, 2, 3}));
}

TEST(EmulatedCollectives, AFailedProcessReleasesTheOthers) {
  ProcessGrid grid({3});
  EmulatedCollectives collectives(grid);
  std::vector<int> failures(3, 0);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      if (r == 2) {
        collectives.abort(); // never reaches the collective
        return;
      }
      failures[r] = failed(collectives.exchange(r, {0}, Tensor::floats({1})));
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(failures, (std::vector<int>{1, 1, 0}));
}

/// Collectives of different groups do not wait for each other: the two
/// rows of a [2, 2] grid make different numbers of them (pipeline stages
/// running different programs) and both finish.
TEST(EmulatedCollectives, GroupsMeetApart) {
  ProcessGrid grid({2, 2});
  EmulatedCollectives collectives(grid);
  std::vector<int> done(4, 0);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 4; ++r)
    threads.emplace_back([&, r] {
      int calls = r < 2 ? 3 : 1;
      for (int i = 0; i < calls; ++i)
        if (failed(collectives.exchange(r, {1}, Tensor::floats({1}))))
          return;
      done[r] = 1;
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(done, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_FALSE(collectives.deadlocked());
}

TEST(EmulatedCollectives, SendsArriveInOrder) {
  ProcessGrid grid({2});
  EmulatedCollectives collectives(grid);
  std::vector<float> got;
  std::thread receiver([&] {
    for (int i = 0; i < 3; ++i) {
      ds::FailureOr<Tensor> t = collectives.recv(0, 1);
      ASSERT_TRUE(succeeded(t));
      got.push_back(t->f[0]);
    }
    collectives.finished();
  });
  for (int i = 0; i < 3; ++i) {
    Tensor t = Tensor::floats({1});
    t.f[0] = static_cast<float>(i);
    ASSERT_TRUE(succeeded(collectives.send(0, 1, t)));
  }
  collectives.finished();
  receiver.join();
  EXPECT_EQ(got, (std::vector<float>{0, 1, 2}));
  EXPECT_FALSE(collectives.deadlocked());
}

/// Both processes wait to receive first: a deadlock, reported, not a hang.
TEST(EmulatedCollectives, EveryoneWaitingIsADeadlock) {
  ProcessGrid grid({2});
  EmulatedCollectives collectives(grid);
  std::vector<int> failures(2, 0);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 2; ++r)
    threads.emplace_back(
        [&, r] { failures[r] = failed(collectives.recv(1 - r, r)); });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(failures, (std::vector<int>{1, 1}));
  EXPECT_TRUE(collectives.deadlocked());
}

} // namespace
