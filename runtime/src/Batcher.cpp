//===- Batcher.cpp - dynamic batching of generation requests --------------===//
//
// One scheduler thread owns the active sequences; submitters and cancel()
// meet it under one mutex (the queue, the running and cancelled ids, the
// free slots, the counters). Callbacks run outside the lock.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/rt/Status.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <thread>

namespace ds::rt {

absl::Status BatcherOptions::validate() const {
  if (maxBatchSize < 1 || maxBatchSize > kMaxBatchSize)
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size ", maxBatchSize, " is outside [1, ",
                     kMaxBatchSize, "]"));
  if (maxQueue < 1 || maxQueue > kMaxQueue)
    return absl::InvalidArgumentError(absl::StrCat(
        "max_queue ", maxQueue, " is outside [1, ", kMaxQueue, "]"));
  if (maxWait.count() < 0 || maxWait.count() > kMaxWaitMicros)
    return absl::InvalidArgumentError(
        absl::StrCat("max_wait_us ", maxWait.count(), " is outside [0, ",
                     kMaxWaitMicros, "]"));
  return checkWorkerThreads(threads);
}

absl::StatusOr<std::unique_ptr<Batcher>>
Batcher::create(std::shared_ptr<const Model> model,
                const BatcherOptions &options) {
  if (absl::Status s = options.validate(); !s.ok())
    return s;
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::create(std::move(model), options.maxBatchSize, options.threads);
  if (!session.ok())
    return session.status();
  if (absl::Status s = (*session)->lead(options.lockstep); !s.ok())
    return s;
  return std::unique_ptr<Batcher>(new Batcher(std::move(*session), options));
}

Batcher::Batcher(std::unique_ptr<Session> s, const BatcherOptions &o)
    : session(std::move(s)), options(o) {
  for (int64_t i = options.maxBatchSize; i-- > 0;)
    freeSlots.push_back(i);
  counters.batchHistogram.assign(options.maxBatchSize + 1, 0);
  counters.replicaRequests.assign(session->numReplicas(), 0);
  started = std::chrono::steady_clock::now();
  scheduler = std::thread([this] { loop(); });
}

int64_t Batcher::takeSlot() {
  // Data-parallel replicas: a slot of the replica with the most free ones
  // (the fewest running sequences), so that requests spread over them.
  size_t pick = freeSlots.size() - 1;
  if (session->numReplicas() > 1) {
    std::vector<int64_t> free(session->numReplicas(), 0);
    for (int64_t s : freeSlots)
      ++free[session->replicaOfSlot(s)];
    for (size_t i = freeSlots.size(); i-- > 0;)
      if (free[session->replicaOfSlot(freeSlots[i])] >
          free[session->replicaOfSlot(freeSlots[pick])])
        pick = i;
  }
  int64_t slot = freeSlots[pick];
  freeSlots.erase(freeSlots.begin() + static_cast<std::ptrdiff_t>(pick));
  ++counters.replicaRequests[session->replicaOfSlot(slot)];
  return slot;
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  scheduler.join();
  // The followers return from Session::follow (a failed message leaves
  // them to the launcher, as a failed collective would).
  if (options.lockstep)
    (void)session->stopFollowers();
}

void Batcher::deliver(const Done &done, GenerationResult result) {
  // A throwing callback must not take the scheduler (and every other
  // request) down with it; its own request is already finished.
  try {
    done(std::move(result));
  } catch (...) {
  }
}

absl::StatusOr<Batcher::RequestId> Batcher::submit(Request request,
                                                   RequestId *assigned) {
  int64_t promptTokens = static_cast<int64_t>(request.prompt.size());
  Queued q{0, std::move(request), std::chrono::steady_clock::now()};
  absl::Status valid = absl::OkStatus();
  try {
    valid = q.request.done
                ? session->validate(q.request.prompt, q.request.options)
                : absl::InvalidArgumentError("no completion callback");
    if (valid.ok()) {
      std::unique_lock<std::mutex> lock(mutex);
      if (stopping) {
        valid = absl::UnavailableError("the batcher is shutting down");
      } else if (static_cast<int64_t>(queue.size()) >= options.maxQueue) {
        valid = absl::ResourceExhaustedError(absl::StrCat(
            "the request queue is full (", options.maxQueue, " waiting)"));
      } else {
        // The id is the caller's before the scheduler can see the request
        // (and complete it).
        q.id = nextId;
        if (assigned)
          *assigned = q.id;
        queue.push_back(std::move(q));
        RequestId id = nextId++;
        counters.maxQueueDepth = std::max<int64_t>(
            counters.maxQueueDepth, static_cast<int64_t>(queue.size()));
        lock.unlock();
        wake.notify_one();
        return id;
      }
    }
  } catch (const std::bad_alloc &) {
    valid = outOfMemoryError("no memory to queue the request");
  } catch (...) {
    valid = absl::InternalError("queueing the request failed");
  }
  try {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.rejected;
  } catch (...) {
  }
  if (q.request.done)
    deliver(q.request.done, GenerationResult::error(valid, promptTokens));
  return valid;
}

bool Batcher::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = std::find_if(queue.begin(), queue.end(),
                           [id](const Queued &q) { return q.id == id; });
    if (it == queue.end()) {
      if (!running.count(id))
        return false;
      cancelRequested.insert(id);
      return true;
    }
    // Completed by the scheduler thread, as every request is.
    cancelledQueued.push_back(std::move(*it));
    queue.erase(it);
  }
  wake.notify_one();
  return true;
}

namespace {
Batcher::Result toTokens(GenerationResult r) {
  if (r.finishReason == FinishReason::kError)
    return r.status;
  return std::move(r.tokens);
}
} // namespace

std::future<Batcher::Result> Batcher::submit(std::vector<int64_t> prompt,
                                             int64_t maxNew) {
  auto promise = std::make_shared<std::promise<Result>>();
  std::future<Result> future = promise->get_future();
  absl::Status refused = submit(std::move(prompt), maxNew, [promise](Result r) {
    promise->set_value(std::move(r));
  });
  (void)refused; // already delivered through the promise
  return future;
}

absl::Status Batcher::submit(std::vector<int64_t> prompt, int64_t maxNew,
                             Callback done) {
  Request request;
  request.prompt = std::move(prompt);
  request.options.maxNewTokens = maxNew;
  request.done = [done = std::move(done)](GenerationResult r) {
    done(toTokens(std::move(r)));
  };
  return submit(std::move(request)).status();
}

void Batcher::finish(Active &a) {
  GenerationResult result = a.seq->take();
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - a.submitted)
                  .count();
  {
    std::lock_guard<std::mutex> lock(mutex);
    // cancel() said yes while this step ran: the caller was promised a
    // cancellation, whatever the step's outcome.
    if (cancelRequested.count(a.id)) {
      result.finishReason = FinishReason::kCancelled;
      result.stopToken = -1;
    }
    recordLatency(ms);
    switch (result.finishReason) {
    case FinishReason::kError:
      ++counters.failed;
      break;
    case FinishReason::kCancelled:
      ++counters.cancelled;
      break;
    default:
      ++counters.completed;
    }
    running.erase(a.id);
    cancelRequested.erase(a.id);
    freeSlots.push_back(a.slot);
  }
  deliver(a.done, std::move(result));
}

void Batcher::recordLatency(double ms) {
  // The most recent kMaxLatencies: percentiles of recent traffic, in
  // bounded memory however long the batcher serves.
  if (latenciesMs.size() < kMaxLatencies)
    latenciesMs.push_back(ms);
  else
    latenciesMs[latencyNext] = ms;
  latencyNext = (latencyNext + 1) % kMaxLatencies;
}

void Batcher::failActive(const absl::Status &status) {
  for (Active &a : active) {
    a.seq->finish(FinishReason::kError, status);
    finish(a);
  }
  active.clear();
}

void Batcher::loop() {
  for (;;) {
    std::vector<RequestId> cancelled;
    std::vector<Queued> admitted, dropped;
    std::vector<int64_t> admittedSlots;
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (active.empty()) {
        wake.wait(lock, [&] {
          return stopping || !queue.empty() || !cancelledQueued.empty();
        });
        // Idle start: give concurrent submitters max_wait to fill the batch.
        if (cancelledQueued.empty() && !queue.empty() &&
            static_cast<int64_t>(queue.size()) < options.maxBatchSize &&
            options.maxWait.count() > 0)
          wake.wait_for(lock, options.maxWait, [&] {
            return stopping ||
                   static_cast<int64_t>(queue.size()) >= options.maxBatchSize;
          });
      }
      // Requests cancelled while they waited complete here, on this thread.
      dropped.swap(cancelledQueued);
      // Join between steps: as many waiting requests as there are slots.
      while (!queue.empty() && !freeSlots.empty()) {
        admitted.push_back(std::move(queue.front()));
        queue.pop_front();
        admittedSlots.push_back(takeSlot());
        running.insert(admitted.back().id);
      }
      cancelled.assign(cancelRequested.begin(), cancelRequested.end());
      if (active.empty() && admitted.empty() && dropped.empty() &&
          queue.empty() && stopping)
        return;
    }
    auto now = std::chrono::steady_clock::now();
    for (Queued &q : dropped) {
      GenerationResult r;
      r.finishReason = FinishReason::kCancelled;
      r.promptTokens = static_cast<int64_t>(q.request.prompt.size());
      {
        std::lock_guard<std::mutex> lock(mutex);
        ++counters.cancelled;
        recordLatency(
            std::chrono::duration<double, std::milli>(now - q.submitted)
                .count());
      }
      deliver(q.request.done, std::move(r));
    }
    int64_t vocab = session->vocabSize();
    for (size_t i = 0; i < admitted.size(); ++i) {
      Queued &q = admitted[i];
      Active a;
      a.id = q.id;
      a.done = std::move(q.request.done);
      a.submitted = q.submitted;
      a.slot = admittedSlots[i];
      int64_t promptTokens = static_cast<int64_t>(q.request.prompt.size());
      try {
        a.seq = std::make_unique<SequenceDecoder>(
            std::move(q.request.prompt), q.request.options,
            std::move(q.request.onToken), session->eosTokens(), vocab);
      } catch (...) {
        // No memory for its sampler: this request fails, the others run.
        {
          std::lock_guard<std::mutex> lock(mutex);
          ++counters.failed;
          running.erase(a.id);
          cancelRequested.erase(a.id);
          freeSlots.push_back(a.slot);
        }
        deliver(a.done, GenerationResult::error(
                            outOfMemoryError("no memory to start the request"),
                            promptTokens));
        continue;
      }
      active.push_back(std::move(a));
    }
    // Cancelled sequences leave before the step, freeing their slots.
    if (!cancelled.empty()) {
      std::vector<Active> still;
      for (Active &a : active) {
        if (std::find(cancelled.begin(), cancelled.end(), a.id) !=
            cancelled.end()) {
          a.seq->finish(FinishReason::kCancelled);
          finish(a);
        } else {
          still.push_back(std::move(a));
        }
      }
      active = std::move(still);
    }
    if (active.empty())
      continue;
    try {
      runStep();
    } catch (const std::bad_alloc &) {
      failActive(outOfMemoryError("no memory for the step"));
    } catch (const std::exception &e) {
      failActive(
          absl::InternalError(absl::StrCat("the step failed: ", e.what())));
    } catch (...) {
      failActive(absl::InternalError("the step failed"));
    }
  }
}

void Batcher::runStep() {
  // One step: prompts of newly admitted sequences, one token of the rest.
  std::vector<int64_t> tokens, positions, slots, lastRow;
  int64_t prefillRows = 0;
  for (Active &a : active) {
    if (!a.prefilled) {
      const std::vector<int64_t> &prompt = a.seq->prompt();
      for (size_t i = 0; i < prompt.size(); ++i) {
        tokens.push_back(prompt[i]);
        positions.push_back(static_cast<int64_t>(i));
        slots.push_back(a.slot);
      }
      prefillRows += static_cast<int64_t>(prompt.size());
    } else {
      tokens.push_back(a.seq->nextToken());
      positions.push_back(a.seq->nextPosition());
      slots.push_back(a.slot);
    }
    lastRow.push_back(static_cast<int64_t>(tokens.size()) - 1);
  }
  // Logits of each sequence's last row only (a prompt's other rows need
  // none).
  absl::StatusOr<HostTensor> logits =
      session->step(tokens, positions, slots, lastRow);
  if (!logits.ok()) {
    failActive(logits.status());
    return;
  }
  std::vector<Active> still;
  int64_t produced = 0;
  size_t ran = active.size();
  int64_t vocab = logits->shape.back();
  for (size_t i = 0; i < active.size(); ++i) {
    Active &a = active[i];
    a.prefilled = true;
    ++produced;
    if (a.seq->advance(logits->data<float>() + i * vocab))
      still.push_back(std::move(a));
    else
      finish(a);
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.steps;
    ++counters.batchHistogram[ran];
    counters.generatedTokens += produced;
    counters.prefillTokens += prefillRows;
  }
  active = std::move(still);
}

BatcherStats Batcher::stats() const {
  std::lock_guard<std::mutex> lock(mutex);
  BatcherStats s = counters;
  s.queueDepth = static_cast<int64_t>(queue.size());
  s.elapsedSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  if (!latenciesMs.empty()) {
    std::vector<double> sorted = latenciesMs;
    std::sort(sorted.begin(), sorted.end());
    auto pct = [&](double p) {
      size_t i = static_cast<size_t>(p * (sorted.size() - 1) + 0.5);
      return sorted[std::min(i, sorted.size() - 1)];
    };
    s.p50Ms = pct(0.5);
    s.p90Ms = pct(0.9);
    s.p99Ms = pct(0.99);
    s.maxMs = sorted.back();
  }
  return s;
}

} // namespace ds::rt
