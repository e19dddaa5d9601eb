//===- Batcher.h - sessions and dynamic batching ------------------*- C++
//-*-===//
//
// A Session owns a KV cache with a fixed number of sequence slots and runs a
// model's functions. A Batcher serves greedy-generation requests from many
// threads: requests wait in a bounded queue; a scheduler thread admits them
// into free slots and runs one step at a time, where every active sequence
// contributes its rows - a newly admitted prompt all its tokens, a running
// sequence its last token - packed as rows of length 1 with their own
// positions and cache slots (no padding to the longest prompt). Sequences
// join and leave between steps. Each request completes through a future or
// a callback with its tokens, or with an error that concerns it alone.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_BATCHER_H
#define DS_RT_BATCHER_H

#include "ds/rt/Executor.h"
#include "ds/rt/ThreadPool.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace ds::rt {

/// Greedy generation for one sequence at a time or for a batch of rows.
class Session {
public:
  /// `threads` kernel worker threads (0: the calling thread only).
  static absl::StatusOr<std::unique_ptr<Session>>
  create(std::shared_ptr<const Model> model, int64_t slots, unsigned threads);

  const Model &model() const { return *model_; }
  int64_t numSlots() const { return cache.numSlots(); }
  int64_t vocabSize() const { return model_->plan().vocabSize; }
  int64_t maxLength() const { return model_->plan().maxCacheLen; }

  /// One step over packed rows: row i is token tokens[i] at positions[i] of
  /// the sequence in slot slots[i]. Returns logits [rows, vocab].
  ///
  /// With worker threads and enough rows, the rows are split into parts
  /// that never share a slot, and each part runs the whole step on its own
  /// thread with its own executor (one wake-up per step, not per op; rows
  /// only meet through their own slot's cache). Otherwise one executor runs
  /// the step and splits large ops over the workers.
  absl::StatusOr<HostTensor> step(const std::vector<int64_t> &tokens,
                                  const std::vector<int64_t> &positions,
                                  const std::vector<int64_t> &slots);
  /// The same, with the logits of rows `logitRows` only (increasing row
  /// indices): returns [logitRows.size(), vocab], each row bit for bit the
  /// row step() gives, and the final projection runs on those rows alone.
  /// A prompt's prefill needs its last row only (generate and the batcher
  /// ask for that).
  absl::StatusOr<HostTensor> step(const std::vector<int64_t> &tokens,
                                  const std::vector<int64_t> &positions,
                                  const std::vector<int64_t> &slots,
                                  const std::vector<int64_t> &logitRows);

  /// Prompt + greedy decoding of `maxNew` tokens in slot `slot`, alone.
  absl::StatusOr<std::vector<int64_t>>
  generate(const std::vector<int64_t> &prompt, int64_t maxNew,
           int64_t slot = 0);

  /// The executor of whole steps (and of a split step's first part); its
  /// profiling and memory limit carry over to the other parts' executors.
  Executor &executor() { return exec; }
  /// Step times by kind over every executor of this session (row parts
  /// included; parts that ran at once add up).
  std::string profileReport() const;

  /// Checks a request against the model: ids in the vocabulary, room in the
  /// cache.
  absl::Status validate(const std::vector<int64_t> &prompt,
                        int64_t maxNew) const;

private:
  Session(std::shared_ptr<const Model> model, KVCache cache, unsigned threads);
  absl::StatusOr<HostTensor> runRows(Executor &executor,
                                     const std::vector<int64_t> &tokens,
                                     const std::vector<int64_t> &positions,
                                     const std::vector<int64_t> &slots,
                                     const std::vector<int64_t> *logitRows);
  absl::StatusOr<HostTensor> stepRows(const std::vector<int64_t> &tokens,
                                      const std::vector<int64_t> &positions,
                                      const std::vector<int64_t> &slots,
                                      const std::vector<int64_t> *logitRows);

  std::shared_ptr<const Model> model_;
  KVCache cache;
  std::unique_ptr<ThreadPool> pool;
  Executor exec;
  /// Executors of the row parts after the first (which uses `exec`).
  std::vector<std::unique_ptr<Executor>> partExecs;
};

/// Boundaries [0 = b0, b1, ..., bP = rows] of up to `parts` contiguous row
/// ranges of about equal size, each boundary moved forward until no slot
/// has rows on both sides of it (fewer ranges when that is impossible):
/// how Session::step splits a step over its workers.
std::vector<int64_t> splitRowsBySlot(const std::vector<int64_t> &slots,
                                     int64_t parts);

struct BatcherOptions {
  /// Sequences decoded together (= KV cache slots).
  int64_t maxBatchSize = 32;
  /// How long an idle scheduler waits for more requests to fill a batch.
  std::chrono::microseconds maxWait{2000};
  /// Requests waiting beyond this are refused (ResourceExhausted).
  int64_t maxQueue = 1024;
  /// Kernel worker threads.
  unsigned threads = 0;
};

struct BatcherStats {
  int64_t queueDepth = 0, maxQueueDepth = 0;
  int64_t completed = 0, failed = 0, rejected = 0;
  int64_t steps = 0, generatedTokens = 0, prefillTokens = 0;
  /// batchHistogram[n]: steps that ran n sequences.
  std::vector<int64_t> batchHistogram;
  /// Submit-to-completion latency percentiles, milliseconds.
  double p50Ms = 0, p90Ms = 0, p99Ms = 0, maxMs = 0;
  double elapsedSeconds = 0;
};

class Batcher {
public:
  using Result = absl::StatusOr<std::vector<int64_t>>;
  using Callback = std::function<void(Result)>;

  static absl::StatusOr<std::unique_ptr<Batcher>>
  create(std::shared_ptr<const Model> model, const BatcherOptions &options);
  /// Finishes every accepted request, then stops the scheduler.
  ~Batcher();

  /// Queues a request; the future holds the generated tokens or the
  /// request's error. A full queue or an invalid request fails at once.
  std::future<Result> submit(std::vector<int64_t> prompt, int64_t maxNew);
  /// The same with a callback, called on the scheduler thread (or inline
  /// when the request is refused). Returns the refusal, if any.
  absl::Status submit(std::vector<int64_t> prompt, int64_t maxNew,
                      Callback done);

  BatcherStats stats() const;

private:
  struct Request {
    std::vector<int64_t> prompt;
    int64_t maxNew = 0;
    Callback done;
    std::chrono::steady_clock::time_point submitted;
  };
  struct Active {
    Request request;
    int64_t slot = 0;
    std::vector<int64_t> generated;
    bool prefilled = false;
  };

  Batcher(std::unique_ptr<Session> session, const BatcherOptions &options);
  void loop();
  void finish(Active &a, Result result);

  std::unique_ptr<Session> session;
  BatcherOptions options;
  mutable std::mutex mutex;
  std::condition_variable wake;
  std::deque<Request> queue;
  bool stopping = false;
  std::vector<Active> active;
  std::vector<int64_t> freeSlots;
  // Stats (under mutex).
  BatcherStats counters;
  std::vector<double> latenciesMs;
  std::chrono::steady_clock::time_point started;
  std::thread scheduler;
};

} // namespace ds::rt

#endif // DS_RT_BATCHER_H
