//===- MemoryPlannerTest.cpp
//-----------------------------------------------===//

#include "ds/rt/MemoryPlanner.h"

#include <gtest/gtest.h>

#include <random>

using namespace ds::rt;

namespace {

TEST(MemoryPlanner, ReusesMemoryOfDeadBuffers) {
  // A chain a -> b -> c -> d: each buffer dies after the next is written, so
  // two slots suffice.
  std::vector<BufferRequest> chain = {
      {1000, 64, 0, 1}, {1000, 64, 1, 2}, {1000, 64, 2, 3}, {1000, 64, 3, 4}};
  absl::StatusOr<MemoryPlan> plan = planMemory(chain);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(isValidPlan(chain, *plan));
  EXPECT_EQ(plan->totalSize, 4000u);
  EXPECT_EQ(plan->arenaSize, 1024u + 1000u);
}

TEST(MemoryPlanner, RandomGraphsGiveValidPlansBelowTheSum) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<BufferRequest> reqs(1 + rng() % 60);
    for (BufferRequest &r : reqs) {
      r.size = rng() % 5000;
      r.alignment = uint64_t(1) << (rng() % 8);
      r.firstUse = rng() % 40;
      r.lastUse = r.firstUse + rng() % 10;
    }
    absl::StatusOr<MemoryPlan> plan = planMemory(reqs);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(isValidPlan(reqs, *plan)) << "trial " << trial;
    // Never more than the sum plus alignment padding.
    uint64_t bound = 0;
    for (const BufferRequest &r : reqs)
      bound += r.size + r.alignment;
    EXPECT_LE(plan->arenaSize, bound);
    // Never less than what the busiest step needs.
    for (int64_t step = 0; step < 50; ++step) {
      uint64_t live = 0;
      for (const BufferRequest &r : reqs)
        if (r.firstUse <= step && step <= r.lastUse)
          live += r.size;
      EXPECT_GE(plan->arenaSize, live);
    }
  }
}

TEST(MemoryPlanner, DetectsBadPlansAndRequests) {
  std::vector<BufferRequest> two = {{100, 64, 0, 2}, {100, 64, 1, 3}};
  MemoryPlan overlapping{{0, 64}, 200, 200};
  EXPECT_FALSE(isValidPlan(two, overlapping));
  EXPECT_FALSE(planMemory({{10, 48, 0, 1}}).ok());           // alignment
  EXPECT_FALSE(planMemory({{10, 64, 3, 1}}).ok());           // lifetime
  EXPECT_FALSE(planMemory({{~uint64_t(0), 64, 0, 1}}).ok()); // size
}

TEST(Arena, IsAlignedTouchedAndWritable) {
  absl::StatusOr<Arena> arena = Arena::create(5 << 20);
  ASSERT_TRUE(arena.ok()) << arena.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(arena->data()) % (2 << 20), 0u);
  EXPECT_GE(arena->size(), uint64_t(5) << 20);
  arena->data()[arena->size() - 1] = 7;
  Arena moved = std::move(*arena);
  EXPECT_EQ(moved.data()[moved.size() - 1], 7);
  EXPECT_FALSE(Arena::create(uint64_t(1) << 60).ok());
}

} // namespace
