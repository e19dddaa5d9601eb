//===- PartitionedTest.cpp - process grids and emulated collectives -------===//
//
// How a value split over grid axes maps to the processes' blocks (the
// convention sharded params, ds.split_axes and the collectives share:
// processes row-major over the grid, a dimension split over several axes in
// the order listed), and the rendezvous the interpreter's threads use.
//
//===----------------------------------------------------------------------===//

#include "ds/interpreter/Partitioned.h"
#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/dialects/InitAllDialects.h"
#include "ds/support/SafeTensors.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <thread>
#include <unistd.h>

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

/// A sharded param's block read from the checkpoint (only its slices of a
/// split leading axis, run by run along other split axes) equals the block
/// cut from the whole tensor, for splits of each axis and of several, a
/// stacked param's experts and a param that selects rows.
TEST(LoadShard, BlocksReadFromTheCheckpointEqualTheWholeCut) {
  char dir[] = "/tmp/ds-loadshard-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/model.safetensors";
  auto floats = [](const Tensor &t) {
    std::vector<uint8_t> bytes(t.f.size() * sizeof(float));
    std::memcpy(bytes.data(), t.f.data(), bytes.size());
    return bytes;
  };
  Tensor w = iota({4, 8}), e0 = iota({2, 4, 6}), e1 = iota({2, 4, 6});
  for (float &x : e1.f)
    x += 1000;
  std::vector<ds::TensorToWrite> tensors = {
      {"w", ds::DType::F32, {4, 8}, floats(w)},
      {"e.0.w", ds::DType::F32, {2, 4, 6}, floats(e0)},
      {"e.1.w", ds::DType::F32, {2, 4, 6}, floats(e1)}};
  ASSERT_TRUE(ds::writeSafeTensors(path, tensors).ok());
  auto checkpoint = ds::Checkpoint::open(path);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  mlir::DialectRegistry registry;
  ds::registerAllDialects(registry);
  mlir::MLIRContext ctx(registry);
  ctx.loadAllAvailableDialects();
  // Each param twice: sharded, and whole (what the block is cut from).
  const char *source = R"mlir(
    shard.grid @grid(shape = 2x2)
    func.func @f() {
      %0 = ds.param "w" sharded @grid [[], [1]] : tensor<4x4xf32>
      %1 = ds.param "w" sharded @grid [[0], [1]] : tensor<2x4xf32>
      %2 = ds.param "w" sharded @grid [[], [0, 1]] : tensor<4x2xf32>
      %3 = ds.param "e.*.w" sharded @grid [[0], [], [], [1]] : tensor<1x2x4x3xf32>
      %4 = ds.param "e.*.w" sharded @grid [[], [1], [], [0]] : tensor<2x1x4x3xf32>
      %5 = ds.param "w" select [3, 1, 0, 2] sharded @grid [[0], [1]] : tensor<2x4xf32>
      %6 = ds.param "w" : tensor<4x8xf32>
      %7 = ds.param "e.*.w" : tensor<2x2x4x6xf32>
      %8 = ds.param "w" select [3, 1, 0, 2] : tensor<4x8xf32>
      return
    })mlir";
  auto module = mlir::parseSourceString<mlir::ModuleOp>(source, &ctx);
  ASSERT_TRUE(module);
  std::vector<ds::ParamOp> params;
  module->walk([&](ds::ParamOp p) { params.push_back(p); });
  ASSERT_EQ(params.size(), 9u);
  ProcessGrid grid({2, 2});
  ds::CheckpointWeights whole(**checkpoint);
  auto wholeOf = [&](size_t i) {
    return i == 3 || i == 4 ? params[7] : i == 5 ? params[8] : params[6];
  };
  for (int64_t rank = 0; rank < grid.size(); ++rank) {
    ds::CheckpointWeights sharded(**checkpoint,
                                  ds::CheckpointWeights::Caching::Stream);
    sharded.setProcess(rank);
    for (size_t i = 0; i < 6; ++i) {
      SCOPED_TRACE("param " + std::to_string(i) + ", process " +
                   std::to_string(rank));
      llvm::SmallVector<llvm::SmallVector<int16_t>> split;
      for (mlir::shard::GridAxesAttr dim :
           params[i].getSplitAxesAttr().getAxes())
        split.emplace_back(dim.asArrayRef());
      auto all = whole.load(wholeOf(i));
      auto block = sharded.load(params[i]);
      ASSERT_TRUE(mlir::succeeded(all) && mlir::succeeded(block));
      Tensor expected = grid.block(*all, split, rank);
      EXPECT_EQ(block->shape, expected.shape);
      EXPECT_EQ(block->f, expected.f);
    }
  }
  std::remove(path.c_str());
  rmdir(dir);
}

} // namespace
