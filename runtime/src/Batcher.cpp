//===- Batcher.cpp - sessions and dynamic batching ------------------------===//
//
// Steps run the model's @decode function on rows of length 1. That computes
// what @prefill computes for a prompt: every layer writes all rows' keys and
// values into their slots (ds.cache_update) before attention reads them, and
// each row attends to positions [0, its own] of its slot, so prompt tokens
// packed as rows see exactly their causal prefix.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <map>

namespace ds::rt {

//===----------------------------------------------------------------------===//
// Session
//===----------------------------------------------------------------------===//

Session::Session(std::shared_ptr<const Model> model, KVCache cache,
                 unsigned threads)
    : model_(std::move(model)), cache(std::move(cache)),
      pool(threads ? std::make_unique<ThreadPool>(threads) : nullptr),
      exec(model_, pool.get()) {}

absl::StatusOr<std::unique_ptr<Session>>
Session::create(std::shared_ptr<const Model> model, int64_t slots,
                unsigned threads) {
  if (!model)
    return absl::InvalidArgumentError("no model");
  if (!model->plan().find("decode"))
    return absl::InvalidArgumentError(
        "the model has no @decode function (compile an imported model)");
  absl::StatusOr<KVCache> cache = KVCache::create(model->plan(), slots);
  if (!cache.ok())
    return cache.status();
  return std::unique_ptr<Session>(
      new Session(std::move(model), std::move(*cache), threads));
}

absl::Status Session::validate(const std::vector<int64_t> &prompt,
                               int64_t maxNew) const {
  if (prompt.empty())
    return absl::InvalidArgumentError("empty prompt");
  if (maxNew < 1)
    return absl::InvalidArgumentError("max_new_tokens must be at least 1");
  int64_t vocab = vocabSize();
  for (int64_t id : prompt)
    if (id < 0 || (vocab > 0 && id >= vocab))
      return absl::InvalidArgumentError(absl::StrCat(
          "token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
  int64_t room = maxLength();
  if (room > 0 && static_cast<int64_t>(prompt.size()) + maxNew - 1 > room)
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), " tokens) plus ", maxNew,
        " new tokens do not fit the KV cache (", room, " positions)"));
  return absl::OkStatus();
}

absl::StatusOr<HostTensor>
Session::runRows(Executor &executor, const std::vector<int64_t> &tokens,
                 const std::vector<int64_t> &positions,
                 const std::vector<int64_t> &slots,
                 const std::vector<int64_t> *logitRows) {
  int64_t n = static_cast<int64_t>(tokens.size());
  HostTensor t = HostTensor::fromInts({n, 1}, tokens);
  HostTensor p = HostTensor::fromInts({n, 1}, positions);
  absl::StatusOr<std::vector<HostTensor>> out =
      executor.run("decode", {&t, &p}, &cache, slots, logitRows);
  if (!out.ok())
    return out.status();
  HostTensor logits = std::move((*out)[0]);
  logits.shape = {logitRows ? static_cast<int64_t>(logitRows->size()) : n,
                  logits.shape.back()};
  return logits;
}

namespace {

/// Rows per part below which splitting a step costs more than it saves.
constexpr int64_t kMinRowsPerPart = 8;

} // namespace

std::vector<int64_t> splitRowsBySlot(const std::vector<int64_t> &slots,
                                     int64_t parts) {
  int64_t n = static_cast<int64_t>(slots.size());
  // Last row of each slot, so that a boundary can be checked in O(1).
  std::map<int64_t, int64_t> last;
  for (int64_t i = 0; i < n; ++i)
    last[slots[i]] = i;
  std::vector<int64_t> bounds{0};
  int64_t reach = -1; // the last row any slot seen so far appears at
  for (int64_t i = 0, part = 1; i < n && part < parts; ++i) {
    reach = std::max(reach, last[slots[i]]);
    int64_t target = n * part / parts;
    if (i + 1 >= target && reach == i && i + 1 - bounds.back() > 0 &&
        n - (i + 1) > 0) {
      bounds.push_back(i + 1);
      ++part;
    }
  }
  bounds.push_back(n);
  return bounds;
}

absl::StatusOr<HostTensor> Session::step(const std::vector<int64_t> &tokens,
                                         const std::vector<int64_t> &positions,
                                         const std::vector<int64_t> &slots) {
  return stepRows(tokens, positions, slots, nullptr);
}

absl::StatusOr<HostTensor> Session::step(
    const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
    const std::vector<int64_t> &slots, const std::vector<int64_t> &logitRows) {
  return stepRows(tokens, positions, slots, &logitRows);
}

absl::StatusOr<HostTensor> Session::stepRows(
    const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
    const std::vector<int64_t> &slots, const std::vector<int64_t> *logitRows) {
  int64_t n = static_cast<int64_t>(tokens.size());
  if (logitRows)
    for (size_t i = 0; i < logitRows->size(); ++i) {
      int64_t r = (*logitRows)[i], prev = i ? (*logitRows)[i - 1] : -1;
      if (r <= prev || r >= n)
        return absl::InvalidArgumentError(
            absl::StrCat("logit rows must increase within [0, ", n, "); got ",
                         r, " after ", prev));
    }
  int64_t width = pool ? pool->numWorkers() + 1 : 1;
  int64_t parts = std::min<int64_t>(width, n / kMinRowsPerPart);
  std::vector<int64_t> bounds;
  if (parts >= 2 && positions.size() == tokens.size() &&
      slots.size() == tokens.size())
    bounds = splitRowsBySlot(slots, parts);
  if (bounds.size() < 3)
    return runRows(exec, tokens, positions, slots, logitRows);

  int64_t count = static_cast<int64_t>(bounds.size()) - 1;
  while (static_cast<int64_t>(partExecs.size()) < count - 1)
    partExecs.push_back(std::make_unique<Executor>(model_, nullptr));
  for (int64_t i = 0; i + 1 < count; ++i) {
    partExecs[i]->setProfiling(exec.isProfiling());
    partExecs[i]->setMemoryLimit(exec.getMemoryLimit());
  }
  auto slice = [&](const std::vector<int64_t> &v, int64_t i) {
    return std::vector<int64_t>(v.begin() + bounds[i],
                                v.begin() + bounds[i + 1]);
  };
  // Each part's wanted rows, relative to its first row.
  std::vector<std::vector<int64_t>> partRows(count);
  if (logitRows)
    for (int64_t r : *logitRows) {
      int64_t i = std::upper_bound(bounds.begin(), bounds.end(), r) -
                  bounds.begin() - 1;
      partRows[i].push_back(r - bounds[i]);
    }
  auto runPart = [&](int64_t i) {
    Executor &e = i == 0 ? exec : *partExecs[i - 1];
    return runRows(e, slice(tokens, i), slice(positions, i), slice(slots, i),
                   logitRows ? &partRows[i] : nullptr);
  };
  // Parts 1.. on the workers, part 0 here; every part is waited for before
  // returning (they write the cache and read the inputs).
  std::vector<std::future<absl::StatusOr<HostTensor>>> pending;
  for (int64_t i = 1; i < count; ++i)
    pending.push_back(pool->submit([&runPart, i] { return runPart(i); }));
  std::vector<absl::StatusOr<HostTensor>> results;
  results.push_back(runPart(0));
  for (auto &f : pending)
    results.push_back(f.get());
  for (auto &r : results)
    if (!r.ok())
      return r.status();
  int64_t vocab = results[0]->shape.back();
  HostTensor logits(
      DType::F32,
      {logitRows ? static_cast<int64_t>(logitRows->size()) : n, vocab});
  float *dst = logits.data<float>();
  for (auto &r : results) {
    int64_t bytes = r->numElements() * static_cast<int64_t>(sizeof(float));
    std::memcpy(dst, r->data<float>(), bytes);
    dst += r->numElements();
  }
  return logits;
}

std::string Session::profileReport() const {
  std::vector<const Executor *> all{&exec};
  for (const auto &e : partExecs)
    all.push_back(e.get());
  return Executor::profileReport(all);
}

namespace {
int64_t argmax(const float *v, int64_t n) {
  return std::max_element(v, v + n) - v;
}
} // namespace

absl::StatusOr<std::vector<int64_t>>
Session::generate(const std::vector<int64_t> &prompt, int64_t maxNew,
                  int64_t slot) {
  if (absl::Status s = validate(prompt, maxNew); !s.ok())
    return s;
  if (slot < 0 || slot >= numSlots())
    return absl::InvalidArgumentError("no such slot");
  cache.clearSlot(slot);
  std::vector<int64_t> positions(prompt.size()), slots(prompt.size(), slot);
  for (size_t i = 0; i < prompt.size(); ++i)
    positions[i] = static_cast<int64_t>(i);
  // The prompt's last row is the only one whose logits are needed.
  absl::StatusOr<HostTensor> logits =
      step(prompt, positions, slots, {static_cast<int64_t>(prompt.size()) - 1});
  if (!logits.ok())
    return logits.status();
  int64_t vocab = logits->shape.back();
  std::vector<int64_t> out{argmax(logits->data<float>(), vocab)};
  for (int64_t i = 1; i < maxNew; ++i) {
    logits = step({out.back()}, {static_cast<int64_t>(prompt.size()) + i - 1},
                  {slot});
    if (!logits.ok())
      return logits.status();
    out.push_back(argmax(logits->data<float>(), vocab));
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Batcher
//===----------------------------------------------------------------------===//

absl::StatusOr<std::unique_ptr<Batcher>>
Batcher::create(std::shared_ptr<const Model> model,
                const BatcherOptions &options) {
  if (options.maxBatchSize < 1 || options.maxQueue < 1)
    return absl::InvalidArgumentError(
        "max_batch_size and max_queue must be at least 1");
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::create(std::move(model), options.maxBatchSize, options.threads);
  if (!session.ok())
    return session.status();
  return std::unique_ptr<Batcher>(new Batcher(std::move(*session), options));
}

Batcher::Batcher(std::unique_ptr<Session> s, const BatcherOptions &o)
    : session(std::move(s)), options(o) {
  for (int64_t i = options.maxBatchSize; i-- > 0;)
    freeSlots.push_back(i);
  counters.batchHistogram.assign(options.maxBatchSize + 1, 0);
  started = std::chrono::steady_clock::now();
  scheduler = std::thread([this] { loop(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  scheduler.join();
}

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
  absl::Status valid = session->validate(prompt, maxNew);
  if (valid.ok()) {
    std::unique_lock<std::mutex> lock(mutex);
    if (stopping) {
      valid = absl::UnavailableError("the batcher is shutting down");
    } else if (static_cast<int64_t>(queue.size()) >= options.maxQueue) {
      valid = absl::ResourceExhaustedError(absl::StrCat(
          "the request queue is full (", options.maxQueue, " waiting)"));
    } else {
      queue.push_back({std::move(prompt), maxNew, std::move(done),
                       std::chrono::steady_clock::now()});
      counters.maxQueueDepth = std::max<int64_t>(
          counters.maxQueueDepth, static_cast<int64_t>(queue.size()));
      lock.unlock();
      wake.notify_one();
      return absl::OkStatus();
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.rejected;
  }
  done(valid);
  return valid;
}

void Batcher::finish(Active &a, Result result) {
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - a.request.submitted)
                  .count();
  {
    std::lock_guard<std::mutex> lock(mutex);
    latenciesMs.push_back(ms);
    if (result.ok())
      ++counters.completed;
    else
      ++counters.failed;
    freeSlots.push_back(a.slot);
  }
  a.request.done(std::move(result));
}

void Batcher::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (active.empty()) {
        wake.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty() && stopping)
          return;
        // Idle start: give concurrent submitters max_wait to fill the batch.
        if (static_cast<int64_t>(queue.size()) < options.maxBatchSize &&
            options.maxWait.count() > 0)
          wake.wait_for(lock, options.maxWait, [&] {
            return stopping ||
                   static_cast<int64_t>(queue.size()) >= options.maxBatchSize;
          });
      }
      // Join between steps: as many waiting requests as there are slots.
      while (!queue.empty() && !freeSlots.empty()) {
        Active a;
        a.request = std::move(queue.front());
        queue.pop_front();
        a.slot = freeSlots.back();
        freeSlots.pop_back();
        active.push_back(std::move(a));
      }
    }
    if (active.empty())
      continue;
    // One step: prompts of newly admitted sequences, one token of the rest.
    std::vector<int64_t> tokens, positions, slots, lastRow;
    int64_t prefillRows = 0;
    for (Active &a : active) {
      if (!a.prefilled) {
        for (size_t i = 0; i < a.request.prompt.size(); ++i) {
          tokens.push_back(a.request.prompt[i]);
          positions.push_back(static_cast<int64_t>(i));
          slots.push_back(a.slot);
        }
        prefillRows += static_cast<int64_t>(a.request.prompt.size());
      } else {
        tokens.push_back(a.generated.back());
        positions.push_back(static_cast<int64_t>(a.request.prompt.size()) +
                            static_cast<int64_t>(a.generated.size()) - 1);
        slots.push_back(a.slot);
      }
      lastRow.push_back(static_cast<int64_t>(tokens.size()) - 1);
    }
    // Logits of each sequence's last row only (a prompt's other rows need
    // none).
    absl::StatusOr<HostTensor> logits =
        session->step(tokens, positions, slots, lastRow);
    std::vector<Active> still;
    int64_t produced = 0;
    for (size_t i = 0; i < active.size(); ++i) {
      Active &a = active[i];
      if (!logits.ok()) {
        finish(a, logits.status());
        continue;
      }
      int64_t vocab = logits->shape.back();
      const float *row = logits->data<float>() + i * vocab;
      a.generated.push_back(std::max_element(row, row + vocab) - row);
      a.prefilled = true;
      ++produced;
      if (static_cast<int64_t>(a.generated.size()) >= a.request.maxNew)
        finish(a, std::move(a.generated));
      else
        still.push_back(std::move(a));
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++counters.steps;
      ++counters.batchHistogram[active.size()];
      counters.generatedTokens += produced;
      counters.prefillTokens += prefillRows;
    }
    active = std::move(still);
  }
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
