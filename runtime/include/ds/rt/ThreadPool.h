//===- ThreadPool.h - the runtime's worker threads ---------------*- C++
//-*-===//
//
// A fixed set of workers, used for parallel loops in kernels and for
// background tasks. A worker that runs out of work spins for a short while
// (kSpinMicros) before it sleeps on a condition variable, and so does a
// parallelFor caller waiting for the last chunk: a decode step runs dozens
// of parallel loops a few hundred microseconds apart, and a futex wake-up
// per loop cost more than the loops gained on two threads. An idle pool
// costs no CPU once the spin is over. The thread calling parallelFor works
// on the loop too, so a pool of N workers runs loops N + 1 wide.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_THREADPOOL_H
#define DS_RT_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace ds::rt {

class ThreadPool {
public:
  /// `workers` threads besides the callers (0: everything runs inline).
  explicit ThreadPool(unsigned workers);
  /// Finishes queued tasks, then joins the workers.
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  unsigned numWorkers() const { return static_cast<unsigned>(threads.size()); }

  /// How long an idle worker (or a waiting caller) spins before it sleeps.
  static constexpr int64_t kSpinMicros = 200;

  /// Runs `task` on a worker; the future holds its result or exception.
  template <typename F> auto submit(F &&task) -> std::future<decltype(task())> {
    using R = decltype(task());
    auto packaged =
        std::make_shared<std::packaged_task<R()>>(std::forward<F>(task));
    std::future<R> result = packaged->get_future();
    enqueue([packaged] { (*packaged)(); });
    return result;
  }

  /// Calls body(begin, end) on disjoint chunks covering [0, n), each at
  /// least `grain` long (except the last), on the workers and the calling
  /// thread; returns when all are done. Safe to call from several threads at
  /// once and from inside a task (the caller then does the work itself when
  /// the workers are busy, so nesting cannot deadlock).
  void parallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t, int64_t)> &body);

private:
  void enqueue(std::function<void()> task);
  void workerLoop();

  std::vector<std::thread> threads;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> queue;
  /// Tasks queued (what spinning workers watch without the lock).
  std::atomic<int64_t> pending{0};
  /// Workers waiting on `wake` (guarded by `mutex`).
  int sleeping = 0;
  /// Set (under `mutex`) by the destructor; spinning workers read it too.
  std::atomic<bool> stopping{false};
};

} // namespace ds::rt

#endif // DS_RT_THREADPOOL_H
