//===- ThreadPool.cpp - the runtime's worker threads
//-----------------------===//

#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <immintrin.h>
#include <memory>

namespace ds::rt {

namespace {
/// Spins until done() or kSpinMicros pass; whether done() became true.
template <typename Done> bool spinUntil(Done done) {
  auto until = std::chrono::steady_clock::now() +
               std::chrono::microseconds(ThreadPool::kSpinMicros);
  for (int i = 0;; ++i) {
    if (done())
      return true;
    _mm_pause();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > until)
      return false;
  }
}

/// Which of its pool's workers the calling thread is (-1: none).
thread_local int workerIndex = -1;
} // namespace

ThreadPool::ThreadPool(unsigned workers) {
  threads.reserve(workers);
  for (unsigned i = 0; i < workers; ++i)
    threads.emplace_back([this, i] {
      workerIndex = static_cast<int>(i);
      workerLoop();
    });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping.store(true, std::memory_order_relaxed);
  }
  wake.notify_all();
  for (std::thread &t : threads)
    t.join();
}

void ThreadPool::enqueue(std::function<void()> task) {
  if (threads.empty()) {
    task();
    return;
  }
  bool notify;
  {
    std::lock_guard<std::mutex> lock(mutex);
    queue.push_back(std::move(task));
    pending.fetch_add(1, std::memory_order_release);
    // A worker that is spinning sees `pending`; only sleepers need a wake.
    notify = sleeping > 0;
  }
  if (notify)
    wake.notify_one();
}

void ThreadPool::workerLoop() {
  for (;;) {
    spinUntil([this] {
      return pending.load(std::memory_order_acquire) > 0 ||
             stopping.load(std::memory_order_relaxed);
    });
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (queue.empty() && !stopping) {
        ++sleeping;
        wake.wait(lock, [this] { return stopping || !queue.empty(); });
        --sleeping;
      }
      if (queue.empty())
        return; // stopping, and nothing left
      task = std::move(queue.front());
      queue.pop_front();
      pending.fetch_sub(1, std::memory_order_relaxed);
    }
    task();
  }
}

void ThreadPool::parallelFor(
    int64_t n, int64_t grain,
    const std::function<void(int64_t, int64_t)> &body) {
  if (n <= 0)
    return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = (n + grain - 1) / grain;
  int64_t width = std::min<int64_t>(chunks, numWorkers() + 1);
  if (width <= 1) {
    body(0, n);
    return;
  }
  // Chunks are claimed from a shared counter by the caller and by helper
  // tasks; a helper that starts after the loop is done finds nothing left.
  struct Loop {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto loop = std::make_shared<Loop>();
  int64_t per = (n + chunks - 1) / chunks;
  auto work = [loop, per, chunks, n, &body] {
    for (int64_t c; (c = loop->next.fetch_add(1)) < chunks;) {
      int64_t begin = c * per, end = std::min(n, begin + per);
      body(begin, end);
      if (loop->done.fetch_add(1) + 1 == chunks) {
        std::lock_guard<std::mutex> lock(loop->mutex);
        loop->finished.notify_all();
      }
    }
  };
  // Helpers take their kernels' scratch from their own slot of the
  // caller's region (ThreadScratch.h); the caller keeps its binding.
  WorkerScratch region;
  if (ThreadScratch::currentRegion(&region)) {
    for (int64_t i = 1; i < width; ++i)
      enqueue([work, region] {
        ThreadScratch::Binding bind(region,
                                    static_cast<unsigned>(workerIndex + 1));
        work();
      });
  } else {
    for (int64_t i = 1; i < width; ++i)
      enqueue(work);
  }
  work();
  if (spinUntil([&] { return loop->done.load() == chunks; }))
    return;
  std::unique_lock<std::mutex> lock(loop->mutex);
  loop->finished.wait(lock, [&] { return loop->done.load() == chunks; });
}

} // namespace ds::rt
