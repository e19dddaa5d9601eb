//===- BatcherTest.cpp - dynamic batching under concurrent load -----------===//
//
// Needs a compiled model: DS_TEST_ARTIFACT names a ds-compile artifact
// (test/lit/runtime/batcher.test makes one); skipped without it.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/rt/Status.h"
#include "ds/rt/ThreadScratch.h"
#include "ds/runtime.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

using namespace ds::rt;

namespace {

std::shared_ptr<const Model> loadModel() {
  const char *path = std::getenv("DS_TEST_ARTIFACT");
  if (!path)
    return nullptr;
  auto m = Model::load(path);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : nullptr;
}

struct Case {
  std::vector<int64_t> prompt;
  int64_t maxNew;
  std::vector<int64_t> expected;
};

std::vector<Case> makeCases(const Model &model, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  int64_t vocab = model.plan().vocabSize;
  std::vector<Case> cases(n);
  auto session = Session::create(
      std::shared_ptr<const Model>(&model, [](const Model *) {}), 1, 0);
  EXPECT_TRUE(session.ok());
  for (Case &c : cases) {
    int len = 1 + static_cast<int>(rng() % 9);
    for (int i = 0; i < len; ++i)
      c.prompt.push_back(static_cast<int64_t>(rng() % vocab));
    c.maxNew = 1 + static_cast<int64_t>(rng() % 6);
    auto alone = (*session)->generate(c.prompt, c.maxNew);
    EXPECT_TRUE(alone.ok()) << alone.status();
    c.expected = *alone;
  }
  return cases;
}

/// 64 threads submit 6 requests each (futures and callbacks alternating);
/// every answer must equal the request run alone.
void stress(std::shared_ptr<const Model> model, int64_t maxBatchSize,
            unsigned workers) {
  // Every kernel's scratch within the planned arena, also for steps that
  // compute only the rows whose logits are wanted.
  const uint64_t spilled = ThreadScratch::overflows();
  std::vector<Case> cases = makeCases(*model, 24, 7);
  BatcherOptions options;
  options.maxBatchSize = maxBatchSize;
  options.maxQueue = 4096;
  options.maxWait = std::chrono::microseconds(500);
  options.threads = workers;
  auto batcher = Batcher::create(model, options);
  ASSERT_TRUE(batcher.ok()) << batcher.status();
  constexpr int kThreads = 64, kPerThread = 6;
  std::atomic<int> callbacks{0}, wrong{0}, errors{0};
  std::vector<std::atomic<int>> seen(kThreads * kPerThread);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        int id = t * kPerThread + i;
        const Case &c = cases[id % cases.size()];
        if (i % 2 == 0) {
          Batcher::Result r = (*batcher)->submit(c.prompt, c.maxNew).get();
          seen[id]++;
          if (!r.ok())
            errors++;
          else if (*r != c.expected)
            wrong++;
        } else {
          absl::Status s = (*batcher)->submit(
              c.prompt, c.maxNew, [&, id, &c = c](Batcher::Result r) {
                seen[id]++;
                if (!r.ok())
                  errors++;
                else if (*r != c.expected)
                  wrong++;
                callbacks++;
              });
          EXPECT_TRUE(s.ok()) << s;
        }
      }
    });
  for (std::thread &t : threads)
    t.join();
  while (callbacks.load() < kThreads * kPerThread / 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  for (auto &s : seen)
    EXPECT_EQ(s.load(), 1); // none lost, none answered twice
  BatcherStats stats = (*batcher)->stats();
  EXPECT_EQ(stats.completed, kThreads * kPerThread);
  EXPECT_EQ(stats.queueDepth, 0);
  int64_t batched = 0;
  for (size_t n = 2; n < stats.batchHistogram.size(); ++n)
    batched += stats.batchHistogram[n];
  EXPECT_GT(batched, 0) << "no step ran more than one sequence";
  EXPECT_EQ(ThreadScratch::overflows(), spilled)
      << "kernels took scratch outside the planned arena";
  EXPECT_GT(stats.p99Ms, 0.0);
}

TEST(Batcher, SixtyFourThreadsEachAnswerEqualsRunningAlone) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  stress(model, 8, 0);
}

// With workers, steps of 16+ rows are split into parts on several threads.
TEST(Batcher, SixtyFourThreadsWithRowPartsOnWorkers) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  stress(model, 32, 3);
}

// A memory limit refuses a run whose planned arena is larger, before
// allocating it; the same executor runs once the limit allows it.
TEST(Executor, MemoryLimitRefusesLargerPlans) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  auto cache = KVCache::create(model->plan(), 4);
  ASSERT_TRUE(cache.ok());
  Executor exec(model);
  exec.setMemoryLimit(1024);
  ds::HostTensor tokens = ds::HostTensor::fromInts({4, 1}, {1, 2, 3, 4});
  ds::HostTensor positions = ds::HostTensor::fromInts({4, 1}, {0, 0, 0, 0});
  auto r = exec.run("decode", {&tokens, &positions}, &*cache, {0, 1, 2, 3});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(isOutOfMemory(r.status())); // DS_OUT_OF_MEMORY in C
  EXPECT_NE(std::string(r.status().message()).find("the limit is 1024"),
            std::string::npos)
      << r.status();
  EXPECT_EQ(exec.arenaBytes(), 0u);
  // The planned working memory (temporaries and every step's scratch) is
  // what the limit bounds: one byte less is refused, that much runs.
  absl::StatusOr<uint64_t> need =
      exec.workingMemory("decode", {{4, 1}, {4, 1}});
  ASSERT_TRUE(need.ok()) << need.status();
  exec.setMemoryLimit(*need - 1);
  EXPECT_TRUE(isOutOfMemory(
      exec.run("decode", {&tokens, &positions}, &*cache, {0, 1, 2, 3})
          .status()));
  exec.setMemoryLimit(*need);
  EXPECT_TRUE(
      exec.run("decode", {&tokens, &positions}, &*cache, {0, 1, 2, 3}).ok());
  EXPECT_GE(exec.arenaBytes(), *need);
  exec.setMemoryLimit(0);
  EXPECT_TRUE(
      exec.run("decode", {&tokens, &positions}, &*cache, {0, 1, 2, 3}).ok());
}

// Row parts are contiguous, cover every row once, never share a slot, and
// are about equal when the slots allow it.
TEST(Session, SplitRowsBySlotKeepsSlotsWhole) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int64_t> slots;
    int64_t rows = 1 + static_cast<int64_t>(rng() % 120);
    // Runs of one slot (a prompt's tokens), sometimes a slot again later.
    while (static_cast<int64_t>(slots.size()) < rows) {
      int64_t slot = static_cast<int64_t>(rng() % 40);
      int64_t len = 1 + static_cast<int64_t>(rng() % 9);
      for (int64_t i = 0; i < len && static_cast<int64_t>(slots.size()) < rows;
           ++i)
        slots.push_back(slot);
    }
    int64_t parts = 1 + static_cast<int64_t>(rng() % 6);
    std::vector<int64_t> b = splitRowsBySlot(slots, parts);
    ASSERT_GE(b.size(), 2u);
    ASSERT_LE(static_cast<int64_t>(b.size()) - 1, parts);
    ASSERT_EQ(b.front(), 0);
    ASSERT_EQ(b.back(), rows);
    std::map<int64_t, size_t> partOf;
    for (size_t p = 0; p + 1 < b.size(); ++p) {
      ASSERT_LT(b[p], b[p + 1]);
      for (int64_t r = b[p]; r < b[p + 1]; ++r) {
        auto [it, fresh] = partOf.emplace(slots[r], p);
        ASSERT_TRUE(fresh || it->second == p)
            << "slot " << slots[r] << " in parts " << it->second << " and "
            << p;
      }
    }
  }
  // 80 rows of 7-row prompts in 4 parts: boundaries move to slot edges.
  std::vector<int64_t> slots;
  for (int64_t i = 0; i < 80; ++i)
    slots.push_back(i / 7);
  EXPECT_EQ(splitRowsBySlot(slots, 4),
            (std::vector<int64_t>{0, 21, 42, 63, 80}));
  // One slot cannot be split.
  EXPECT_EQ(splitRowsBySlot(std::vector<int64_t>(50, 3), 4),
            (std::vector<int64_t>{0, 50}));
}

/// Max |a - b| / max |b| of two logits tensors of one shape.
double relDiff(const ds::HostTensor &a, const ds::HostTensor &b) {
  double err = 0, mag = 0;
  for (int64_t i = 0; i < b.numElements(); ++i) {
    err = std::max<double>(err,
                           std::abs(a.data<float>()[i] - b.data<float>()[i]));
    mag = std::max<double>(mag, std::abs(b.data<float>()[i]));
  }
  return mag > 0 ? err / mag : err;
}

// A step split into row parts (never splitting a slot's rows) gives the
// logits of the same step run whole, bit for bit: a part's GEMMs see fewer
// rows (an expert's rows too), but the kernels are batch invariant.
TEST(Session, RowPartsMatchOneExecutor) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  int64_t vocab = model->plan().vocabSize;
  // About 27 slots: prompts of 1..5 tokens as consecutive rows, 80 rows in
  // all; the next step has a row per slot (still split).
  std::vector<int64_t> tokens, positions, slots;
  std::mt19937 rng(3);
  for (int64_t slot = 0; tokens.size() < 80; ++slot) {
    int64_t len = 1 + static_cast<int64_t>(rng() % 5);
    for (int64_t p = 0; p < len && tokens.size() < 80; ++p) {
      tokens.push_back(static_cast<int64_t>(rng() % vocab));
      positions.push_back(p);
      slots.push_back(slot);
    }
  }
  auto whole = Session::create(model, slots.back() + 1, 0);
  auto split = Session::create(model, slots.back() + 1, 3);
  ASSERT_TRUE(whole.ok() && split.ok());
  // Every kernel's scratch comes from the plan, on the workers too.
  const uint64_t spilled = ThreadScratch::overflows();
  (*whole)->executor().setProfiling(true);
  (*split)->executor().setProfiling(true);
  auto a = (*whole)->step(tokens, positions, slots);
  auto b = (*split)->step(tokens, positions, slots);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  ASSERT_EQ(a->shape, b->shape);
  EXPECT_EQ(relDiff(*b, *a), 0.0);
  // The profile covers every part: each ran every step of the plan once.
  auto calls = [](const std::string &report) {
    int64_t total = 0;
    std::istringstream lines(report);
    for (std::string line; std::getline(lines, line);)
      if (auto at = line.rfind(" calls"); at != std::string::npos)
        total += std::stoll(line.substr(line.rfind(' ', at - 1), at));
    return total;
  };
  int64_t parts = static_cast<int64_t>(splitRowsBySlot(slots, 4).size()) - 1;
  ASSERT_GT(parts, 1);
  EXPECT_GT(calls((*whole)->profileReport()), 0);
  EXPECT_EQ(calls((*split)->profileReport()),
            parts * calls((*whole)->profileReport()));
  // The next decode step reads what both wrote into their caches.
  std::vector<int64_t> next, nextPos, nextSlots;
  for (size_t i = 0; i < tokens.size(); ++i)
    if (i + 1 == tokens.size() || slots[i + 1] != slots[i]) {
      next.push_back((tokens[i] + 1) % vocab);
      nextPos.push_back(positions[i] + 1);
      nextSlots.push_back(slots[i]);
    }
  a = (*whole)->step(next, nextPos, nextSlots);
  b = (*split)->step(next, nextPos, nextSlots);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(relDiff(*b, *a), 0.0);
  EXPECT_EQ(ThreadScratch::overflows(), spilled);
}

// A sequence's logits do not depend on what it is batched with: every
// prompt prefilled as packed rows of one step, then one decode step of
// every slot (split over workers), gives bit for bit the logits of each
// sequence run by itself.
TEST(Session, LogitsAreBatchInvariant) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  int64_t vocab = model->plan().vocabSize;
  const int64_t n = 12;
  std::mt19937 rng(5);
  std::vector<std::vector<int64_t>> prompts(n);
  for (auto &p : prompts) {
    p.resize(1 + rng() % 6);
    for (int64_t &t : p)
      t = static_cast<int64_t>(rng() % vocab);
  }
  auto together = Session::create(model, n, 3);
  auto alone = Session::create(model, n, 0);
  ASSERT_TRUE(together.ok() && alone.ok());
  std::vector<int64_t> tokens, positions, slots, next, nextPos, all(n);
  for (int64_t s = 0; s < n; ++s) {
    for (size_t i = 0; i < prompts[s].size(); ++i) {
      tokens.push_back(prompts[s][i]);
      positions.push_back(static_cast<int64_t>(i));
      slots.push_back(s);
    }
    next.push_back((s * 5 + 1) % vocab);
    nextPos.push_back(static_cast<int64_t>(prompts[s].size()));
    all[s] = s;
  }
  auto prefill = (*together)->step(tokens, positions, slots);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  auto decode = (*together)->step(next, nextPos, all);
  ASSERT_TRUE(decode.ok()) << decode.status();
  int64_t row = 0;
  for (int64_t s = 0; s < n; ++s) {
    int64_t len = static_cast<int64_t>(prompts[s].size());
    std::vector<int64_t> pos(len);
    std::iota(pos.begin(), pos.end(), 0);
    auto one = (*alone)->step(prompts[s], pos, std::vector<int64_t>(len, s));
    ASSERT_TRUE(one.ok()) << one.status();
    EXPECT_EQ(0, std::memcmp(one->data<float>(),
                             prefill->data<float>() + row * vocab,
                             len * vocab * sizeof(float)))
        << "prefill logits of sequence " << s;
    row += len;
    auto step = (*alone)->step({next[s]}, {nextPos[s]}, {s});
    ASSERT_TRUE(step.ok()) << step.status();
    EXPECT_EQ(0, std::memcmp(step->data<float>(),
                             decode->data<float>() + s * vocab,
                             vocab * sizeof(float)))
        << "decode logits of sequence " << s;
  }
}

// Asking for some rows' logits (a prompt's last row) gives exactly those
// rows of the full step, with and without row parts on workers; the cache
// is written the same (the next step agrees); bad row lists are refused.
TEST(Session, SelectedLogitRowsMatchAllRows) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  int64_t vocab = model->plan().vocabSize;
  const int64_t n = 10;
  std::mt19937 rng(9);
  std::vector<int64_t> tokens, positions, slots, lastRows, all(n);
  for (int64_t s = 0; s < n; ++s) {
    int64_t len = 1 + rng() % 5;
    for (int64_t i = 0; i < len; ++i) {
      tokens.push_back(static_cast<int64_t>(rng() % vocab));
      positions.push_back(i);
      slots.push_back(s);
    }
    lastRows.push_back(static_cast<int64_t>(tokens.size()) - 1);
    all[s] = s;
  }
  for (unsigned threads : {0u, 3u}) {
    auto full = Session::create(model, n, 0);
    auto picked = Session::create(model, n, threads);
    ASSERT_TRUE(full.ok() && picked.ok());
    auto a = (*full)->step(tokens, positions, slots);
    auto b = (*picked)->step(tokens, positions, slots, lastRows);
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    ASSERT_EQ(b->shape, (std::vector<int64_t>{n, vocab}));
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(0, std::memcmp(a->data<float>() + lastRows[i] * vocab,
                               b->data<float>() + i * vocab,
                               vocab * sizeof(float)))
          << "row " << lastRows[i] << " with " << threads << " workers";
    // Both caches hold the same prompts: the next step agrees.
    std::vector<int64_t> next(n, 1), nextPos(n);
    for (int64_t s = 0; s < n; ++s)
      nextPos[s] = positions[lastRows[s]] + 1;
    auto c = (*full)->step(next, nextPos, all);
    auto d = (*picked)->step(next, nextPos, all, {0, 4, n - 1});
    ASSERT_TRUE(c.ok() && d.ok());
    ASSERT_EQ(d->shape, (std::vector<int64_t>{3, vocab}));
    int64_t i = 0;
    for (int64_t r : {int64_t{0}, int64_t{4}, n - 1})
      EXPECT_EQ(0, std::memcmp(c->data<float>() + r * vocab,
                               d->data<float>() + (i++) * vocab,
                               vocab * sizeof(float)));
    // No rows at all: the step still runs (caches written), no logits.
    auto e =
        (*picked)->step({2}, {nextPos[0] + 1}, {0}, std::vector<int64_t>{});
    ASSERT_TRUE(e.ok()) << e.status();
    EXPECT_EQ(e->shape, (std::vector<int64_t>{0, vocab}));
  }
  for (unsigned threads : {0u, 3u}) {
    auto session = Session::create(model, n, threads);
    ASSERT_TRUE(session.ok());
    for (std::vector<int64_t> bad :
         {std::vector<int64_t>{3, 1}, std::vector<int64_t>{0, 0},
          std::vector<int64_t>{static_cast<int64_t>(tokens.size())},
          std::vector<int64_t>{-1}, std::vector<int64_t>{lastRows[5], 0}}) {
      auto r = (*session)->step(tokens, positions, slots, bad);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
          << r.status();
    }
  }
}

TEST(Batcher, FullQueueAndBadRequestsAreRefusedNotLost) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  BatcherOptions options;
  options.maxBatchSize = 1;
  options.maxQueue = 2;
  auto batcher = Batcher::create(model, options);
  ASSERT_TRUE(batcher.ok());
  std::vector<std::future<Batcher::Result>> futures;
  for (int i = 0; i < 50; ++i)
    futures.push_back((*batcher)->submit({1, 2, 3}, 8));
  int ok = 0, full = 0;
  for (auto &f : futures) {
    Batcher::Result r = f.get();
    if (r.ok())
      ++ok;
    else if (r.status().code() == absl::StatusCode::kResourceExhausted)
      ++full;
    else
      ADD_FAILURE() << r.status();
  }
  EXPECT_EQ(ok + full, 50);
  EXPECT_GT(full, 0);
  EXPECT_GE(ok, 1);
  Batcher::Result bad =
      (*batcher)->submit({model->plan().vocabSize + 5}, 2).get();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("outside the vocabulary"),
            std::string::npos);
  Batcher::Result tooLong =
      (*batcher)->submit({1}, model->plan().maxCacheLen + 1).get();
  EXPECT_EQ(tooLong.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CApi, SessionAndBatcherThroughTheCInterface) {
  const char *path = std::getenv("DS_TEST_ARTIFACT");
  if (!path)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  ds_model *model = nullptr;
  ASSERT_EQ(ds_model_load(path, &model), DS_OK) << ds_last_error();
  ds_session *session = nullptr;
  ASSERT_EQ(ds_session_create(model, 0, &session), DS_OK);
  int64_t prompt[] = {5, 6, 7}, alone[4];
  ASSERT_EQ(ds_session_generate(session, prompt, 3, 4, alone), DS_OK);
  int64_t bad[] = {-1};
  EXPECT_EQ(ds_session_generate(session, bad, 1, 4, alone + 0),
            DS_INVALID_ARGUMENT);
  EXPECT_NE(std::string(ds_last_error()).find("outside the vocabulary"),
            std::string::npos);
  ds_batcher *batcher = nullptr;
  ds_batcher_options options{4, 1000, 16, 0};
  ASSERT_EQ(ds_batcher_create(model, &options, &batcher), DS_OK);
  struct Out {
    std::atomic<int> done{0};
    int64_t tokens[4] = {};
  } out;
  ASSERT_EQ(ds_batcher_submit(
                batcher, prompt, 3, 4,
                [](void *user, ds_status_code status, const char *,
                   const int64_t *tokens, int64_t n) {
                  auto *o = static_cast<Out *>(user);
                  if (status == DS_OK && n == 4)
                    std::copy(tokens, tokens + 4, o->tokens);
                  o->done++;
                },
                &out),
            DS_OK);
  ds_batcher_release(batcher); // finishes accepted requests first
  EXPECT_EQ(out.done.load(), 1);
  EXPECT_TRUE(std::equal(alone, alone + 4, out.tokens));
  EXPECT_EQ(ds_model_load("/nonexistent.dsa", &model), DS_NOT_FOUND);
  ds_session_release(session);
  ds_model_release(model);
}

} // namespace

//===----------------------------------------------------------------------===//
// Sampling, stop tokens, streaming and cancellation through the batcher
//===----------------------------------------------------------------------===//

namespace {

GenerationOptions sampled(uint64_t seed, int64_t maxNew) {
  GenerationOptions g;
  g.maxNewTokens = maxNew;
  g.sampling.temperature = 1.3; // flat enough that seeds disagree
  g.sampling.topK = 40;
  g.sampling.topP = 0.95;
  g.sampling.minP = 0.01;
  g.sampling.repetitionPenalty = 1.1;
  g.sampling.seed = seed;
  g.logprobs = 2;
  return g;
}

/// Submits and waits.
GenerationResult runOne(Batcher &b, Batcher::Request r) {
  std::promise<GenerationResult> p;
  auto f = p.get_future();
  r.done = [&p](GenerationResult g) { p.set_value(std::move(g)); };
  (void)b.submit(std::move(r));
  return f.get();
}

} // namespace

TEST(Batcher, SameSeedSameTokensAloneAndInABatchOf32) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  auto session = Session::create(model, 1, 0);
  ASSERT_TRUE(session.ok());
  int64_t vocab = model->plan().vocabSize;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<GenerationResult> alone;
  for (int i = 0; i < 32; ++i) {
    prompts.push_back({(i * 7 + 1) % vocab, (i * 13 + 2) % vocab, i % vocab});
    alone.push_back((*session)->generate(prompts.back(), sampled(i % 8, 8)));
    ASSERT_NE(alone.back().finishReason, FinishReason::kError)
        << alone.back().status;
  }
  // Seeds repeat every 8 prompts, prompts do not: sampling really depends on
  // the seed (two seeds give different tokens for one prompt).
  GenerationResult other = (*session)->generate(prompts[0], sampled(99, 8));
  EXPECT_NE(other.tokens, alone[0].tokens);

  BatcherOptions options;
  options.maxBatchSize = 32;
  options.maxWait = std::chrono::microseconds(200000);
  auto batcher = Batcher::create(model, options);
  ASSERT_TRUE(batcher.ok());
  std::vector<std::promise<GenerationResult>> promises(32);
  std::vector<std::thread> threads;
  for (int i = 0; i < 32; ++i)
    threads.emplace_back([&, i] {
      Batcher::Request r;
      r.prompt = prompts[i];
      r.options = sampled(i % 8, 8);
      r.done = [&, i](GenerationResult g) {
        promises[i].set_value(std::move(g));
      };
      (void)(*batcher)->submit(std::move(r));
    });
  for (auto &t : threads)
    t.join();
  for (int i = 0; i < 32; ++i) {
    GenerationResult r = promises[i].get_future().get();
    EXPECT_EQ(r.tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(r.logprobs, alone[i].logprobs) << "request " << i;
    EXPECT_EQ(r.finishReason, alone[i].finishReason);
  }
  EXPECT_GT((*batcher)->stats().batchHistogram.size(), 1u);
}

TEST(Batcher, StopTokensEndASequenceAndFreeItsSlot) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  auto session = Session::create(model, 1, 0);
  ASSERT_TRUE(session.ok());
  std::vector<int64_t> prompt = {3, 1, 4};
  auto greedy = (*session)->generate(prompt, 6);
  ASSERT_TRUE(greedy.ok());
  // Stop at the third greedy token (the first occurrence of its id).
  int64_t stop = (*greedy)[2];
  size_t first =
      std::find(greedy->begin(), greedy->end(), stop) - greedy->begin();
  BatcherOptions options;
  options.maxBatchSize = 1; // the next request needs the freed slot
  auto batcher = Batcher::create(model, options);
  ASSERT_TRUE(batcher.ok());
  Batcher::Request r;
  r.prompt = prompt;
  r.options.maxNewTokens = 6;
  r.options.stopTokens = {stop};
  GenerationResult stopped = runOne(**batcher, r);
  EXPECT_EQ(stopped.finishReason, FinishReason::kStop);
  EXPECT_EQ(stopped.stopToken, stop);
  EXPECT_EQ(stopped.tokens,
            std::vector<int64_t>(greedy->begin(), greedy->begin() + first));
  EXPECT_EQ(stopped.completionTokens, static_cast<int64_t>(first) + 1);
  // The slot is free again: a second request runs to its length.
  r.options.stopTokens.clear();
  GenerationResult next = runOne(**batcher, r);
  EXPECT_EQ(next.finishReason, FinishReason::kLength);
  EXPECT_EQ(next.tokens, *greedy);
  // A stop token outside the vocabulary is refused, with done called.
  r.options.stopTokens = {model->plan().vocabSize};
  GenerationResult refused = runOne(**batcher, r);
  EXPECT_EQ(refused.finishReason, FinishReason::kError);
  EXPECT_NE(std::string(refused.status.message()).find("stop token"),
            std::string::npos);
}

TEST(Batcher, StreamsTokensAndStopsWhenTheCallbackSaysSo) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  auto batcher = Batcher::create(model, BatcherOptions());
  ASSERT_TRUE(batcher.ok());
  std::vector<int64_t> streamed;
  Batcher::Request r;
  r.prompt = {2, 7};
  r.options = sampled(3, 10);
  r.onToken = [&](const TokenEvent &e) {
    EXPECT_EQ(e.index, static_cast<int64_t>(streamed.size()));
    streamed.push_back(e.token);
    return streamed.size() < 4;
  };
  GenerationResult res = runOne(**batcher, r);
  EXPECT_EQ(res.finishReason, FinishReason::kStop);
  EXPECT_EQ(res.tokens, streamed);
  EXPECT_EQ(res.tokens.size(), 4u);
  // A callback that throws fails its own request only.
  r.onToken = [](const TokenEvent &) -> bool { throw 7; };
  GenerationResult thrown = runOne(**batcher, r);
  EXPECT_EQ(thrown.finishReason, FinishReason::kError);
  r.onToken = nullptr;
  r.options.maxNewTokens = 3;
  EXPECT_EQ(runOne(**batcher, r).tokens.size(), 3u);
}

TEST(Batcher, CancellingAHundredOfAThousandUnderSixtyFourSubmitters) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  BatcherOptions options;
  options.maxBatchSize = 8;
  options.maxQueue = 2000;
  options.maxWait = std::chrono::microseconds(100);
  auto batcher = Batcher::create(model, options);
  ASSERT_TRUE(batcher.ok());
  constexpr int kThreads = 64, kRequests = 1000;
  int64_t vocab = model->plan().vocabSize;
  int64_t room = model->plan().maxCacheLen;
  struct Outcome {
    std::atomic<int> calls{0};
    FinishReason reason = FinishReason::kError;
    size_t tokens = 0;
    bool cancelAccepted = false;
    std::thread::id doneOn, cancelledFrom;
  };
  std::vector<Outcome> outcomes(kRequests);
  std::atomic<int> submitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = t; i < kRequests; i += kThreads) {
        Batcher::Request r;
        r.prompt = {static_cast<int64_t>(rng() % vocab),
                    static_cast<int64_t>(rng() % vocab)};
        r.options.maxNewTokens = std::min<int64_t>(room - 2, 4 + i % 12);
        r.options.ignoreEos = true;
        r.done = [&, i](GenerationResult g) {
          outcomes[i].reason = g.finishReason;
          outcomes[i].tokens = g.tokens.size();
          outcomes[i].doneOn = std::this_thread::get_id();
          outcomes[i].calls++; // releases the fields above
        };
        absl::StatusOr<Batcher::RequestId> id =
            (*batcher)->submit(std::move(r));
        ASSERT_TRUE(id.ok()) << id.status();
        submitted++;
        // Every tenth request is cancelled: some at once (still queued),
        // some a little later (running or finished).
        if (i % 10 == 3) {
          if (i % 20 == 13)
            std::this_thread::sleep_for(
                std::chrono::microseconds(rng() % 3000));
          outcomes[i].cancelledFrom = std::this_thread::get_id();
          outcomes[i].cancelAccepted = (*batcher)->cancel(*id);
        }
      }
    });
  for (auto &t : threads)
    t.join();
  // Every request completes (a lost one would hang here until the limit).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto finished = [&] {
    int n = 0;
    for (const Outcome &o : outcomes)
      n += o.calls.load();
    return n;
  };
  while (finished() < kRequests && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(finished(), kRequests);
  EXPECT_EQ(submitted.load(), kRequests);
  int cancelled = 0, completed = 0;
  for (int i = 0; i < kRequests; ++i) {
    const Outcome &o = outcomes[i];
    ASSERT_EQ(o.calls.load(), 1) << "request " << i;
    if (o.cancelAccepted) {
      EXPECT_EQ(o.reason, FinishReason::kCancelled) << "request " << i;
      // Completed by the batcher's thread, even when it was still queued.
      EXPECT_NE(o.doneOn, o.cancelledFrom) << "request " << i;
      ++cancelled;
    } else {
      EXPECT_EQ(o.reason, FinishReason::kLength) << "request " << i;
      EXPECT_EQ(o.tokens,
                static_cast<size_t>(std::min<int64_t>(room - 2, 4 + i % 12)));
      ++completed;
    }
  }
  EXPECT_EQ(cancelled + completed, kRequests);
  EXPECT_GT(cancelled, 0);

  // A running request: cancelled after its first token, it leaves with
  // the tokens it has.
  std::promise<void> firstToken;
  std::atomic<bool> signalled{false};
  Batcher::Request slow;
  slow.prompt = {1, 2};
  slow.options.maxNewTokens = std::min<int64_t>(room - 2, 20);
  slow.options.ignoreEos = true;
  slow.onToken = [&](const TokenEvent &) {
    if (!signalled.exchange(true))
      firstToken.set_value();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return true;
  };
  std::promise<GenerationResult> slowDone;
  slow.done = [&](GenerationResult g) { slowDone.set_value(std::move(g)); };
  absl::StatusOr<Batcher::RequestId> slowId = (*batcher)->submit(slow);
  ASSERT_TRUE(slowId.ok());
  firstToken.get_future().wait();
  EXPECT_TRUE((*batcher)->cancel(*slowId));
  GenerationResult slowResult = slowDone.get_future().get();
  EXPECT_EQ(slowResult.finishReason, FinishReason::kCancelled);
  EXPECT_GE(slowResult.tokens.size(), 1u);
  EXPECT_LT(slowResult.tokens.size(), 4u);
  EXPECT_FALSE((*batcher)->cancel(*slowId)); // finished: not found
  ++cancelled;
  // Counted before each request's done call.
  BatcherStats st = (*batcher)->stats();
  EXPECT_EQ(st.cancelled, cancelled);
  EXPECT_EQ(st.completed, completed);
  std::printf("cancelled %d of %d (100 asked)\n", cancelled, kRequests);
  // An unknown or finished id is not found.
  auto again = Batcher::create(model, options);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE((*again)->cancel(12345));
}

//===----------------------------------------------------------------------===//
// The C API as a hostile caller uses it
//===----------------------------------------------------------------------===//

namespace {
struct Calls {
  std::atomic<int> n{0};
  ds_status_code status = DS_OK;
  std::string message;
};
void countDone(void *user, ds_status_code status, const char *message,
               const int64_t *, int64_t) {
  auto *c = static_cast<Calls *>(user);
  c->status = status;
  c->message = message ? message : "";
  c->n++;
}
std::string lastError() { return ds_last_error(); }
} // namespace

TEST(CApi, NullHandlesAndBadSizesAreRefusedWithTheRightCode) {
  EXPECT_EQ(ds_model_load(nullptr, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_create(nullptr, 0, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_batcher_create(nullptr, nullptr, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_batcher_cancel(nullptr, 1), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_batcher_get_stats(nullptr, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_model_vocab_size(nullptr), 0);
  ds_model_release(nullptr);
  ds_session_release(nullptr);
  ds_batcher_release(nullptr);
  // Submitting to no batcher still owes `done` its one call.
  Calls c;
  int64_t p[] = {1};
  EXPECT_EQ(ds_batcher_submit(nullptr, p, 1, 2, countDone, &c),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(c.n.load(), 1);
  // ds_batcher_submit_request with no batcher calls nothing (as documented).
  Calls none;
  ds_request orphan{p,
                    1,
                    nullptr,
                    nullptr,
                    [](void *user, const ds_generation_result *r) {
                      countDone(user, r->status, r->message, r->tokens,
                                r->num_tokens);
                    },
                    &none};
  EXPECT_EQ(ds_batcher_submit_request(nullptr, &orphan, nullptr),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(none.n.load(), 0);
  EXPECT_EQ(ds_check_abi(DS_VERSION_NUMBER + 10000), DS_UNAVAILABLE);
  EXPECT_NE(lastError().find("built against ds"), std::string::npos);
  EXPECT_EQ(ds_status_code_string(DS_RESOURCE_EXHAUSTED),
            std::string("resource exhausted"));
  EXPECT_EQ(ds_finish_reason_string(DS_FINISH_CANCELLED),
            std::string("cancelled"));
  EXPECT_EQ(ds_finish_reason_string(17), std::string("unknown"));
}

TEST(CApi, HostileCallsOnALoadedModel) {
  const char *path = std::getenv("DS_TEST_ARTIFACT");
  if (!path)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  ds_model *model = nullptr;
  ASSERT_EQ(ds_model_load(path, &model), DS_OK) << ds_last_error();

  // Options: a zeroed struct is refused, naming the field; *_init gives
  // defaults that work; every bound is checked.
  ds_batcher *b = nullptr;
  ds_batcher_options zero{};
  EXPECT_EQ(ds_batcher_create(model, &zero, &b), DS_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("max_batch_size 0"), std::string::npos)
      << lastError();
  EXPECT_NE(lastError().find("ds_batcher_options_init"), std::string::npos);
  ds_batcher_options o;
  auto refusedWith = [&](const char *field) {
    EXPECT_EQ(ds_batcher_create(model, &o, &b), DS_INVALID_ARGUMENT) << field;
    EXPECT_NE(lastError().find(field), std::string::npos) << lastError();
    ds_batcher_options_init(&o);
  };
  ds_batcher_options_init(&o);
  o.max_batch_size = 100000000;
  refusedWith("max_batch_size");
  o.max_batch_size = -5;
  refusedWith("max_batch_size");
  o.max_queue = 0;
  refusedWith("max_queue");
  o.max_queue = -1;
  refusedWith("max_queue");
  o.threads = -3;
  refusedWith("threads");
  o.threads = 100000;
  refusedWith("threads");
  o.max_wait_us = -1;
  refusedWith("max_wait_us");
  ds_session *s = nullptr;
  EXPECT_EQ(ds_session_create(model, 100000, &s), DS_INVALID_ARGUMENT);
  EXPECT_EQ(ds_session_create(model, -1, &s), DS_INVALID_ARGUMENT);

  // ds_last_error is the last *failure*: a success leaves it.
  EXPECT_EQ(ds_session_create(model, 0, &s), DS_OK);
  EXPECT_NE(lastError().find("threads"), std::string::npos);

  ds_batcher_options_init(&o);
  o.max_batch_size = 1;
  o.max_queue = 1;
  ASSERT_EQ(ds_batcher_create(model, &o, &b), DS_OK) << lastError();
  // Bad prompts: refused, and `done` called exactly once each.
  int64_t p[] = {1, 2};
  for (int64_t len : {int64_t{0}, int64_t{-1}}) {
    Calls c;
    EXPECT_EQ(ds_batcher_submit(b, p, len, 2, countDone, &c),
              DS_INVALID_ARGUMENT);
    EXPECT_EQ(c.n.load(), 1) << len;
    EXPECT_EQ(c.status, DS_INVALID_ARGUMENT);
  }
  Calls nullPrompt;
  EXPECT_EQ(ds_batcher_submit(b, nullptr, 2, 2, countDone, &nullPrompt),
            DS_INVALID_ARGUMENT);
  EXPECT_EQ(nullPrompt.n.load(), 1);
  EXPECT_EQ(ds_batcher_submit(b, p, 2, 2, nullptr, nullptr),
            DS_INVALID_ARGUMENT);
  // Bad generation options name the field.
  ds_generation_options g;
  ds_generation_options_init(&g);
  g.top_p = 0;
  Calls badOpt;
  ds_request rq{p,
                2,
                &g,
                nullptr,
                [](void *user, const ds_generation_result *r) {
                  countDone(user, r->status, r->message, r->tokens,
                            r->num_tokens);
                },
                &badOpt};
  EXPECT_EQ(ds_batcher_submit_request(b, &rq, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("top_p"), std::string::npos);
  EXPECT_EQ(badOpt.n.load(), 1);
  g.top_p = 1;
  g.num_stop_tokens = 3;
  g.stop_tokens = nullptr;
  EXPECT_EQ(ds_batcher_submit_request(b, &rq, nullptr), DS_INVALID_ARGUMENT);
  EXPECT_EQ(badOpt.n.load(), 2);

  // A full queue is DS_RESOURCE_EXHAUSTED, not "unavailable"; a streaming
  // callback that throws (a C++ caller's) fails its own request only.
  ds_generation_options_init(&g);
  g.max_new_tokens = 4;
  struct Thrower {
    std::atomic<int> done{0};
    ds_finish_reason reason = DS_FINISH_LENGTH;
  } thrower;
  ds_request throwing{p,
                      2,
                      &g,
                      [](void *, const ds_token_event *) -> int {
                        throw std::runtime_error("callback failure");
                      },
                      [](void *user, const ds_generation_result *r) {
                        auto *t = static_cast<Thrower *>(user);
                        t->reason = r->finish_reason;
                        t->done++;
                      },
                      &thrower};
  std::vector<Calls> many(20);
  int full = 0;
  ds_status_code first = ds_batcher_submit_request(b, &throwing, nullptr);
  EXPECT_EQ(first, DS_OK);
  for (Calls &c : many) {
    ds_status_code code = ds_batcher_submit(b, p, 2, 4, countDone, &c);
    full += code == DS_RESOURCE_EXHAUSTED;
    EXPECT_TRUE(code == DS_OK || code == DS_RESOURCE_EXHAUSTED) << code;
  }
  EXPECT_GT(full, 0);
  uint64_t id = 0;
  ds_request ok{
      p, 2, &g, nullptr, [](void *, const ds_generation_result *) {}, nullptr};
  (void)ds_batcher_submit_request(b, &ok, &id);
  EXPECT_EQ(ds_batcher_cancel(b, 987654321), DS_NOT_FOUND);
  ds_batcher_release(b);
  EXPECT_EQ(thrower.done.load(), 1);
  EXPECT_EQ(thrower.reason, DS_FINISH_ERROR);
  for (Calls &c : many)
    EXPECT_EQ(c.n.load(), 1);

  // Sessions: ds_session_run with sampling, streaming and logprobs gives
  // the same as the batcher would; a result's pointers are valid.
  ds_generation_options_init(&g);
  g.max_new_tokens = 5;
  g.temperature = 0.8;
  g.seed = 11;
  g.logprobs = 1;
  struct Stream {
    std::vector<int64_t> tokens;
  } stream;
  ds_generation_result res;
  ASSERT_EQ(ds_session_run(
                s, p, 2, &g,
                [](void *user, const ds_token_event *e) {
                  static_cast<Stream *>(user)->tokens.push_back(e->token);
                  return 0;
                },
                &stream, &res),
            DS_OK);
  EXPECT_EQ(res.finish_reason, DS_FINISH_LENGTH);
  ASSERT_EQ(res.num_tokens, 5);
  EXPECT_EQ(std::vector<int64_t>(res.tokens, res.tokens + 5), stream.tokens);
  ASSERT_NE(res.logprobs, nullptr);
  EXPECT_LE(res.logprobs[0], 0);
  EXPECT_EQ(ds_session_run(s, p, 2, &g, nullptr, nullptr, nullptr),
            DS_INVALID_ARGUMENT);
  g.temperature = -1;
  EXPECT_EQ(ds_session_run(s, p, 2, &g, nullptr, nullptr, &res),
            DS_INVALID_ARGUMENT);
  EXPECT_NE(lastError().find("temperature"), std::string::npos);
  ds_session_release(s);
  ds_model_release(model);
}
