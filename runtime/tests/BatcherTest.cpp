//===- BatcherTest.cpp - dynamic batching under concurrent load -----------===//
//
// Needs a compiled model: DS_TEST_ARTIFACT names a ds-compile artifact
// (test/lit/runtime/batcher.test makes one); skipped without it.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/runtime.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <random>
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

TEST(Batcher, SixtyFourThreadsEachAnswerEqualsRunningAlone) {
  auto model = loadModel();
  if (!model)
    GTEST_SKIP() << "DS_TEST_ARTIFACT not set";
  std::vector<Case> cases = makeCases(*model, 24, 7);
  BatcherOptions options;
  options.maxBatchSize = 8;
  options.maxQueue = 4096;
  options.maxWait = std::chrono::microseconds(500);
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
  EXPECT_GT(stats.p99Ms, 0.0);
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
