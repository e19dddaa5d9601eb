//===- Batcher.h - dynamic batching of generation requests --------------===//
//
// A Batcher serves generation requests from many threads over one Session:
// requests wait in a bounded queue; a scheduler thread admits them into free
// KV cache slots and runs one step at a time, where every active sequence
// contributes its rows - a newly admitted prompt all its tokens, a running
// sequence its last token - packed as rows of length 1 with their own
// positions and cache slots (no padding to the longest prompt). Sequences
// join and leave between steps; a finished or cancelled one frees its slot
// for the next step. Each request is sampled with its own options and seed
// (the same tokens as alone), may stream its tokens, and completes exactly
// once with a GenerationResult.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_BATCHER_H
#define DS_RT_BATCHER_H

#include "ds/rt/Generation.h"
#include "ds/rt/Session.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_set>

namespace ds::rt {

/// Bounds Batcher::create checks (the C API documents the same).
inline constexpr int64_t kMaxBatchSize = 4096;
inline constexpr int64_t kMaxQueue = 1 << 20;
inline constexpr int64_t kMaxWaitMicros = 10'000'000;

struct BatcherOptions {
  /// Sequences decoded together (= KV cache slots). [1, kMaxBatchSize].
  int64_t maxBatchSize = 32;
  /// How long an idle scheduler waits for more requests to fill a batch.
  /// [0, kMaxWaitMicros].
  std::chrono::microseconds maxWait{2000};
  /// Requests waiting beyond this are refused (ResourceExhausted).
  /// [1, kMaxQueue].
  int64_t maxQueue = 1024;
  /// Kernel worker threads (0: the scheduler thread alone).
  unsigned threads = 0;
  /// A partitioned model: this batcher's process leads the other
  /// processes of `lockstep` (Session::lead), which run each step through
  /// Session::follow until the batcher is destroyed. Not owned.
  Communicator *lockstep = nullptr;

  /// InvalidArgument naming the first option outside its bounds.
  absl::Status validate() const;
};

struct BatcherStats {
  int64_t queueDepth = 0, maxQueueDepth = 0;
  /// Finished with length or stop / with an error / cancelled / refused at
  /// submission.
  int64_t completed = 0, failed = 0, cancelled = 0, rejected = 0;
  int64_t steps = 0, generatedTokens = 0, prefillTokens = 0;
  /// batchHistogram[n]: steps that ran n sequences.
  std::vector<int64_t> batchHistogram;
  /// Requests admitted to each data-parallel replica's slots (one entry
  /// without replicas).
  std::vector<int64_t> replicaRequests;
  /// Submit-to-completion latency percentiles, milliseconds.
  double p50Ms = 0, p90Ms = 0, p99Ms = 0, maxMs = 0;
  double elapsedSeconds = 0;
};

class Batcher {
public:
  using RequestId = uint64_t;
  using Done = std::function<void(GenerationResult)>;
  struct Request {
    std::vector<int64_t> prompt;
    GenerationOptions options;
    /// Streaming: called on the scheduler thread after each token; may be
    /// empty.
    TokenCallback onToken;
    /// Called exactly once: on the scheduler thread when the request
    /// finishes, or inline in submit() when it is refused.
    Done done;
  };

  /// Validates `options` (see BatcherOptions) and allocates the KV cache.
  static absl::StatusOr<std::unique_ptr<Batcher>>
  create(std::shared_ptr<const Model> model, const BatcherOptions &options);
  /// Finishes every accepted request, then stops the scheduler.
  ~Batcher();

  /// Queues a request and returns its id (also written to `assigned`, if
  /// given, before the request can complete). A refused request (invalid,
  /// queue full: ResourceExhausted, shutting down: Unavailable, no memory)
  /// gets its `done` call with FinishReason::kError before this returns the
  /// same status.
  absl::StatusOr<RequestId> submit(Request request,
                                   RequestId *assigned = nullptr);
  /// Cancels a queued or running request: it completes with
  /// FinishReason::kCancelled, on the scheduler thread (a running one with
  /// the tokens it has, at the next step, which no longer includes it).
  /// False when the id is unknown or already finished. Thread-safe.
  bool cancel(RequestId id);

  /// Greedy conveniences: the tokens or the request's error.
  using Result = absl::StatusOr<std::vector<int64_t>>;
  using Callback = std::function<void(Result)>;
  std::future<Result> submit(std::vector<int64_t> prompt, int64_t maxNew);
  absl::Status submit(std::vector<int64_t> prompt, int64_t maxNew,
                      Callback done);

  BatcherStats stats() const;

private:
  struct Queued {
    RequestId id = 0;
    Request request;
    std::chrono::steady_clock::time_point submitted;
  };
  struct Active {
    RequestId id = 0;
    Done done;
    std::chrono::steady_clock::time_point submitted;
    int64_t slot = 0;
    std::unique_ptr<SequenceDecoder> seq;
    bool prefilled = false;
  };

  Batcher(std::unique_ptr<Session> session, const BatcherOptions &options);
  void loop();
  /// A free slot, taken (with the lock held): the last freed, or with
  /// data-parallel replicas one of the least busy replica.
  int64_t takeSlot();
  /// One @decode step over the active sequences; finishes those that end.
  void runStep();
  /// Ends every active sequence with `status` (a step that failed).
  void failActive(const absl::Status &status);
  /// Delivers a result; catches what `done` throws.
  static void deliver(const Done &done, GenerationResult result);
  /// Frees the slot, counts the result and delivers it.
  void finish(Active &a);
  /// Keeps the most recent latencies only (under mutex).
  void recordLatency(double ms);
  static constexpr size_t kMaxLatencies = 1 << 16;

  std::unique_ptr<Session> session;
  BatcherOptions options;
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<Queued> queue;
  /// Queued requests cancel() took out, to be completed by the scheduler.
  std::vector<Queued> cancelledQueued;
  bool stopping = false;
  RequestId nextId = 1;
  /// Running requests, and those of them cancel() asked to stop (under
  /// mutex; `active` itself belongs to the scheduler thread).
  std::unordered_set<RequestId> running, cancelRequested;
  std::vector<Active> active;
  std::vector<int64_t> freeSlots;
  // Stats (under mutex).
  BatcherStats counters;
  std::vector<double> latenciesMs;
  size_t latencyNext = 0;
  std::chrono::steady_clock::time_point started;
  std::thread scheduler;
};

} // namespace ds::rt

#endif // DS_RT_BATCHER_H
