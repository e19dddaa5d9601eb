//===- Serve.cpp - ds-run --serve: a burst of requests through the batcher ===//

#include "ds/tools/ds-run/Serve.h"

#include "ds/rt/Batcher.h"

#include "llvm/Support/FormatVariadic.h"

#include <condition_variable>
#include <mutex>
#include <thread>

namespace ds::run {

int serveRequests(const RunOptions &opts,
                  std::shared_ptr<const rt::Model> model,
                  const std::vector<std::vector<int64_t>> &prompts,
                  const std::vector<std::vector<int64_t>> &expected,
                  bool interpreterChecked, rt::Communicator *lockstep) {
  int64_t serve = opts.serve;
  if (serve > rt::kMaxQueue)
    return fail("--serve " + llvm::Twine(serve) + " is more than the " +
                llvm::Twine(rt::kMaxQueue) + " requests a batcher can queue");
  rt::BatcherOptions options;
  options.maxBatchSize = opts.maxBatch;
  options.maxQueue = std::max<int64_t>(serve, 1);
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (opts.serveThreads < -1)
    return fail("--serve-threads must be -1 (one less than the cores) or "
                "at least 0");
  int64_t threads = opts.serveThreads >= 0 ? opts.serveThreads : cores - 1;
  if (threads > std::numeric_limits<int>::max())
    return fail("--serve-threads " + llvm::Twine(threads) + " is too large");
  options.threads = static_cast<unsigned>(threads);
  options.lockstep = lockstep;
  auto batcher = rt::Batcher::create(model, options);
  if (!batcher.ok())
    return fail(std::string(batcher.status().message()));

  std::vector<rt::GenerationResult> answers(serve);
  std::mutex mutex;
  std::condition_variable allDone;
  int64_t remaining = serve;
  auto start = std::chrono::steady_clock::now();
  rt::GenerationOptions generation = opts.generation;
  generation.maxNewTokens = opts.generate;
  for (int64_t r = 0; r < serve; ++r) {
    rt::Batcher::Request request;
    request.prompt = prompts[r % prompts.size()];
    request.options = generation;
    request.done = [&, r](rt::GenerationResult g) {
      answers[r] = std::move(g);
      std::lock_guard<std::mutex> lock(mutex);
      if (--remaining == 0)
        allDone.notify_one();
    };
    // A refusal has already been delivered to `done`.
    (void)(*batcher)->submit(std::move(request));
  }
  {
    std::unique_lock<std::mutex> lock(mutex);
    allDone.wait(lock, [&] { return remaining == 0; });
  }
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  int64_t agree = 0, tokens = 0;
  for (int64_t r = 0; r < serve; ++r) {
    if (answers[r].finishReason == rt::FinishReason::kError)
      return fail("request " + std::to_string(r) + ": " +
                  std::string(answers[r].status.message()));
    tokens += static_cast<int64_t>(answers[r].tokens.size());
    agree += answers[r].tokens == expected[r % expected.size()];
  }
  rt::BatcherStats st = (*batcher)->stats();
  double mean = 0;
  for (size_t i = 0; i < st.batchHistogram.size(); ++i)
    mean += static_cast<double>(i) * st.batchHistogram[i];
  mean /= std::max<int64_t>(st.steps, 1);
  llvm::outs() << llvm::formatv(
      "served {0} concurrent requests through the batcher in {1:f3} s: "
      "{2:f0} generated tokens/s, {3} steps, mean batch {4:f1} sequences, "
      "latency p50 {5:f2} ms p90 {6:f2} ms p99 {7:f2} ms\n",
      serve, secs, tokens / secs, st.steps, mean, st.p50Ms, st.p90Ms, st.p99Ms);
  if (st.replicaRequests.size() > 1) {
    llvm::outs() << "requests per data-parallel replica:";
    for (int64_t n : st.replicaRequests)
      llvm::outs() << " " << n;
    llvm::outs() << "\n";
  }
  llvm::outs() << "batched answers equal to the sequential"
               << (interpreterChecked ? ", interpreter-checked" : "")
               << " generation: " << agree << "/" << serve << "\n";
  if (agree != serve)
    return fail("batched generation differs from sequential generation");
  return 0;
}

int followSteps(const RunOptions &opts, std::shared_ptr<const rt::Model> model,
                rt::Communicator &comm) {
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  int64_t threads = opts.serveThreads >= 0 ? opts.serveThreads : cores - 1;
  auto session = rt::Session::create(std::move(model), opts.maxBatch,
                                     static_cast<unsigned>(threads));
  if (!session.ok())
    return fail(std::string(session.status().message()));
  if (absl::Status st = (*session)->follow(comm); !st.ok())
    return fail("following rank 0's steps: " + std::string(st.message()));
  return 0;
}

} // namespace ds::run
