//===- ThreadPoolTest.cpp
//--------------------------------------------------===//

#include "ds/rt/ThreadPool.h"

#include <gtest/gtest.h>

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <numeric>

using namespace ds::rt;

namespace {

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (unsigned workers : {0u, 1u, 3u}) {
    ThreadPool pool(workers);
    for (int64_t n : {0, 1, 7, 1000, 4097}) {
      for (int64_t grain : {1, 16, 5000}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallelFor(n, grain, [&](int64_t b, int64_t e) {
          ASSERT_LE(0, b);
          ASSERT_LE(b, e);
          ASSERT_LE(e, n);
          for (int64_t i = b; i < e; ++i)
            hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "n " << n << " i " << i;
      }
    }
  }
}

TEST(ThreadPool, ConcurrentCallersAndNestedLoops) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 8; ++c)
    callers.emplace_back([&] {
      for (int r = 0; r < 20; ++r)
        pool.parallelFor(64, 4, [&](int64_t b, int64_t e) {
          // A loop inside a loop must not deadlock.
          pool.parallelFor(e - b, 1, [&](int64_t bb, int64_t ee) {
            sum.fetch_add(ee - bb);
          });
        });
    });
  for (std::thread &t : callers)
    t.join();
  EXPECT_EQ(sum.load(), 8 * 20 * 64);
}

TEST(ThreadPool, SubmitReturnsResultsAndExceptions) {
  ThreadPool pool(2);
  std::vector<std::future<int>> futures;
  for (int i = 0; i < 100; ++i)
    futures.push_back(pool.submit([i] { return i * i; }));
  int total = 0;
  for (auto &f : futures)
    total += f.get();
  EXPECT_EQ(total, 328350);
  auto failing = pool.submit([]() -> int { throw std::runtime_error("x"); });
  EXPECT_THROW(failing.get(), std::runtime_error);
}

double processCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec * 1e-6;
}

TEST(ThreadPool, IdleWorkersDoNotSpin) {
  ThreadPool pool(4);
  pool.parallelFor(100, 1, [](int64_t, int64_t) {});
  double before = processCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  double used = processCpuSeconds() - before;
  // Four spinning workers would burn ~1.2 s of CPU here.
  EXPECT_LT(used, 0.05);
}

} // namespace
