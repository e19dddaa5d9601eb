//===- CApi.cpp - the ds_* C entry points ---------------------------------===//
//
// Thin wrappers over Model, Session and Batcher. Every entry point runs its
// body inside guard(): absl::Status becomes a status code plus a
// thread-local message, std::bad_alloc becomes DS_OUT_OF_MEMORY and any
// other exception DS_INTERNAL, so nothing throws across.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/rt/Compile.h"
#include "ds/rt/Status.h"
#include "ds/runtime.h"

#include "LastError.h"

#include "absl/strings/str_cat.h"

#include <atomic>
#include <cstring>
#include <dlfcn.h>
#include <new>

using namespace ds::rt;

struct ds_model {
  std::shared_ptr<const Model> model;
};
struct ds_session {
  std::unique_ptr<Session> session;
  /// What the last ds_session_run result points to.
  GenerationResult last;
  std::string message;
};
struct ds_batcher {
  std::unique_ptr<Batcher> batcher;
};

namespace {
thread_local std::string lastError;

ds_status_code toCode(const absl::Status &s) {
  switch (s.code()) {
  case absl::StatusCode::kOk:
    return DS_OK;
  case absl::StatusCode::kInvalidArgument:
  case absl::StatusCode::kFailedPrecondition:
  case absl::StatusCode::kOutOfRange:
    return DS_INVALID_ARGUMENT;
  case absl::StatusCode::kNotFound:
    return DS_NOT_FOUND;
  case absl::StatusCode::kResourceExhausted:
    return isOutOfMemory(s) ? DS_OUT_OF_MEMORY : DS_RESOURCE_EXHAUSTED;
  case absl::StatusCode::kUnimplemented:
    return DS_UNIMPLEMENTED;
  case absl::StatusCode::kUnavailable:
    return DS_UNAVAILABLE;
  case absl::StatusCode::kDataLoss:
    return DS_DATA_LOSS;
  default:
    return DS_INTERNAL;
  }
}

/// Records a failure's message (successes leave the last one in place).
ds_status_code report(const absl::Status &s) {
  if (!s.ok())
    lastError = std::string(s.message());
  return toCode(s);
}

ds_status_code fail(ds_status_code code, std::string message) {
  lastError = std::move(message);
  return code;
}

/// Runs an entry point's body; no exception leaves it.
template <typename Body> ds_status_code guard(const char *entry, Body body) {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail(DS_OUT_OF_MEMORY, absl::StrCat(entry, ": out of memory"));
  } catch (const std::exception &e) {
    return fail(DS_INTERNAL, absl::StrCat(entry, ": ", e.what()));
  } catch (...) {
    return fail(DS_INTERNAL, absl::StrCat(entry, ": unknown exception"));
  }
}

ds_status_code invalid(const char *entry, const char *what) {
  return fail(DS_INVALID_ARGUMENT, absl::StrCat(entry, ": ", what));
}

/// ds_generation_options -> GenerationOptions (bounds checked later, by
/// GenerationOptions::validate and Session::validate).
absl::StatusOr<GenerationOptions> toOptions(const ds_generation_options *o) {
  GenerationOptions g;
  if (!o)
    return g;
  g.maxNewTokens = o->max_new_tokens;
  g.sampling.temperature = o->temperature;
  g.sampling.topK = o->top_k;
  g.sampling.topP = o->top_p;
  g.sampling.minP = o->min_p;
  g.sampling.repetitionPenalty = o->repetition_penalty;
  g.sampling.seed = o->seed;
  if (o->num_stop_tokens < 0 || o->num_stop_tokens > kMaxStopTokens)
    return absl::InvalidArgumentError(
        absl::StrCat("num_stop_tokens ", o->num_stop_tokens, " is outside [0, ",
                     kMaxStopTokens, "]"));
  if (o->num_stop_tokens > 0 && !o->stop_tokens)
    return absl::InvalidArgumentError("stop_tokens is NULL");
  if (o->num_stop_tokens > 0)
    g.stopTokens.assign(o->stop_tokens, o->stop_tokens + o->num_stop_tokens);
  g.ignoreEos = o->ignore_eos != 0;
  g.logprobs = o->logprobs;
  return g;
}

TokenCallback toTokenCallback(ds_token_fn fn, void *user) {
  if (!fn)
    return nullptr;
  return [fn, user](const TokenEvent &e) {
    std::vector<ds_token_logprob> top(e.top.size());
    for (size_t i = 0; i < e.top.size(); ++i)
      top[i] = {e.top[i].token, e.top[i].logprob};
    ds_token_event event{e.token, e.index, e.logprob,
                         top.empty() ? nullptr : top.data(),
                         static_cast<int64_t>(top.size())};
    return fn(user, &event) == 0;
  };
}

/// A C view of `r`; its pointers reference `r` and `message`.
ds_generation_result toResult(const GenerationResult &r,
                              const std::string &message) {
  ds_generation_result out;
  out.status =
      r.finishReason == FinishReason::kError ? toCode(r.status) : DS_OK;
  if (r.finishReason == FinishReason::kError && out.status == DS_OK)
    out.status = DS_INTERNAL;
  out.message = message.c_str();
  out.finish_reason = static_cast<ds_finish_reason>(r.finishReason);
  out.tokens = r.tokens.empty() ? nullptr : r.tokens.data();
  out.num_tokens = static_cast<int64_t>(r.tokens.size());
  out.stop_token = r.stopToken;
  out.prompt_tokens = r.promptTokens;
  out.completion_tokens = r.completionTokens;
  out.logprobs = r.logprobs.empty() ? nullptr : r.logprobs.data();
  return out;
}

std::atomic<CompileHook> compileHook{nullptr};
} // namespace

void ds::rt::setCompileHook(CompileHook hook) { compileHook.store(hook); }

namespace ds::rt {
void setLastError(std::string message) { lastError = std::move(message); }
} // namespace ds::rt

extern "C" {

const char *ds_last_error(void) { return lastError.c_str(); }

ds_status_code ds_model_load(const char *path, ds_model **out) {
  return guard("ds_model_load", [&] {
    if (!path || !out)
      return invalid("ds_model_load", "null argument");
    absl::StatusOr<std::shared_ptr<Model>> m = Model::load(path);
    if (!m.ok())
      return report(m.status());
    *out = new ds_model{std::move(*m)};
    return DS_OK;
  });
}

ds_status_code ds_model_compile(const char *path, const char *optimize,
                                ds_model **out) {
  return guard("ds_model_compile", [&] {
    if (!path || !out)
      return invalid("ds_model_compile", "null argument");
    CompileHook hook = compileHook.load();
    if (!hook) {
      // The compiler registers itself when its library loads.
      dlopen("libDSCodegen.so", RTLD_NOW | RTLD_GLOBAL);
      hook = compileHook.load();
    }
    if (!hook)
      return report(absl::UnimplementedError(
          "this program has no compiler: link DS::DSCodegen, or compile with "
          "ds-compile and use ds_model_load"));
    absl::StatusOr<std::shared_ptr<Model>> m =
        hook(path, optimize ? optimize : "");
    if (!m.ok())
      return report(m.status());
    *out = new ds_model{std::move(*m)};
    return DS_OK;
  });
}

int64_t ds_model_vocab_size(const ds_model *m) {
  return m ? m->model->plan().vocabSize : 0;
}
int64_t ds_model_max_length(const ds_model *m) {
  return m ? m->model->plan().maxCacheLen : 0;
}
int64_t ds_model_eos_tokens(const ds_model *m, int64_t *ids, int64_t capacity) {
  if (!m)
    return 0;
  const std::vector<int64_t> &eos = m->model->plan().eosTokenIds;
  for (int64_t i = 0; ids && i < capacity && i < int64_t(eos.size()); ++i)
    ids[i] = eos[i];
  return static_cast<int64_t>(eos.size());
}
void ds_model_release(ds_model *m) { delete m; }

void ds_generation_options_init(ds_generation_options *o) {
  if (!o)
    return;
  GenerationOptions d;
  *o = {};
  o->max_new_tokens = d.maxNewTokens;
  o->temperature = d.sampling.temperature;
  o->top_k = d.sampling.topK;
  o->top_p = d.sampling.topP;
  o->min_p = d.sampling.minP;
  o->repetition_penalty = d.sampling.repetitionPenalty;
  o->seed = d.sampling.seed;
  o->stop_tokens = nullptr;
  o->num_stop_tokens = 0;
  o->ignore_eos = d.ignoreEos;
  o->logprobs = d.logprobs;
}

const char *ds_finish_reason_string(int reason) {
  if (reason < DS_FINISH_LENGTH || reason > DS_FINISH_ERROR)
    return "unknown";
  return finishReasonName(static_cast<FinishReason>(reason));
}

ds_status_code ds_session_create(ds_model *m, int threads, ds_session **out) {
  return guard("ds_session_create", [&] {
    if (!m || !out)
      return invalid("ds_session_create", "null argument");
    if (absl::Status t = checkWorkerThreads(threads); !t.ok())
      return fail(DS_INVALID_ARGUMENT,
                  absl::StrCat("ds_session_create: ", t.message()));
    auto s = Session::create(m->model, 1, static_cast<unsigned>(threads));
    if (!s.ok())
      return report(s.status());
    *out = new ds_session{std::move(*s), {}, {}};
    return DS_OK;
  });
}

ds_status_code ds_session_run(ds_session *s, const int64_t *prompt, int64_t n,
                              const ds_generation_options *options,
                              ds_token_fn onToken, void *user,
                              ds_generation_result *result) {
  return guard("ds_session_run", [&] {
    if (!s || !result)
      return invalid("ds_session_run", "null session or result");
    if (!prompt || n <= 0)
      return invalid("ds_session_run",
                     "the prompt must be a non-NULL array of at least 1 id");
    absl::StatusOr<GenerationOptions> g = toOptions(options);
    if (!g.ok())
      return report(g.status());
    if (absl::Status v =
            s->session->validate(std::vector<int64_t>(prompt, prompt + n), *g);
        !v.ok())
      return report(v);
    s->last = s->session->generate(std::vector<int64_t>(prompt, prompt + n), *g,
                                   toTokenCallback(onToken, user));
    s->message = std::string(s->last.status.message());
    *result = toResult(s->last, s->message);
    if (result->status != DS_OK)
      lastError = s->message;
    return result->status;
  });
}

ds_status_code ds_session_generate(ds_session *s, const int64_t *prompt,
                                   int64_t n, int64_t maxNew,
                                   int64_t *outTokens) {
  return guard("ds_session_generate", [&] {
    if (!s || !outTokens)
      return invalid("ds_session_generate", "null session or output");
    if (!prompt || n <= 0)
      return invalid("ds_session_generate",
                     "the prompt must be a non-NULL array of at least 1 id");
    GenerationOptions g;
    g.maxNewTokens = maxNew;
    g.ignoreEos = true;
    GenerationResult r =
        s->session->generate(std::vector<int64_t>(prompt, prompt + n), g);
    if (r.finishReason == FinishReason::kError)
      return report(r.status);
    std::memcpy(outTokens, r.tokens.data(), r.tokens.size() * sizeof(int64_t));
    return DS_OK;
  });
}

void ds_session_release(ds_session *s) { delete s; }

void ds_batcher_options_init(ds_batcher_options *o) {
  if (!o)
    return;
  BatcherOptions d;
  *o = {};
  o->max_batch_size = d.maxBatchSize;
  o->max_wait_us = d.maxWait.count();
  o->max_queue = d.maxQueue;
  o->threads = static_cast<int>(d.threads);
}

ds_status_code ds_batcher_create(ds_model *m, const ds_batcher_options *o,
                                 ds_batcher **out) {
  return guard("ds_batcher_create", [&] {
    if (!m || !out)
      return invalid("ds_batcher_create", "null argument");
    BatcherOptions options;
    if (o) {
      if (o->threads < 0)
        return invalid("ds_batcher_create", "threads is negative");
      options.maxBatchSize = o->max_batch_size;
      options.maxWait = std::chrono::microseconds(o->max_wait_us);
      options.maxQueue = o->max_queue;
      options.threads = static_cast<unsigned>(o->threads);
    }
    if (absl::Status s = options.validate(); !s.ok())
      return fail(DS_INVALID_ARGUMENT,
                  absl::StrCat("ds_batcher_create: ", s.message(),
                               " (ds_batcher_options_init sets the defaults)"));
    auto b = Batcher::create(m->model, options);
    if (!b.ok())
      return report(b.status());
    *out = new ds_batcher{std::move(*b)};
    return DS_OK;
  });
}

ds_status_code ds_batcher_submit_request(ds_batcher *b, const ds_request *rq,
                                         uint64_t *outId) {
  const char *entry = "ds_batcher_submit_request";
  // `done` must run exactly once, even if what follows throws.
  bool delivered = false;
  auto refuse = [&](ds_status_code code) {
    // Nothing is called without a batcher (the header says so).
    if (!delivered && b && rq && rq->done) {
      delivered = true;
      GenerationResult r = GenerationResult::error(
          absl::UnknownError(""),
          rq->prompt_length > 0 ? rq->prompt_length : 0);
      std::string message = lastError;
      ds_generation_result c = toResult(r, message);
      c.status = code;
      try {
        rq->done(rq->user, &c);
      } catch (...) {
      }
    }
    return code;
  };
  ds_status_code code = guard(entry, [&] {
    if (!b || !rq || !rq->done)
      return invalid(entry, "null batcher, request or done callback");
    if (!rq->prompt || rq->prompt_length <= 0)
      return refuse(invalid(
          entry, "the prompt must be a non-NULL array of at least 1 id"));
    absl::StatusOr<GenerationOptions> g = toOptions(rq->options);
    if (!g.ok())
      return refuse(report(g.status()));
    Batcher::Request request;
    request.prompt.assign(rq->prompt, rq->prompt + rq->prompt_length);
    request.options = std::move(*g);
    request.onToken = toTokenCallback(rq->on_token, rq->user);
    ds_result_fn done = rq->done;
    void *user = rq->user;
    request.done = [done, user](GenerationResult r) {
      std::string message(r.status.message());
      ds_generation_result c = toResult(r, message);
      done(user, &c);
    };
    // From here on the batcher calls `done` (refusals included).
    delivered = true;
    // The id is written before the request can complete (and `done` run).
    static_assert(std::is_same_v<Batcher::RequestId, uint64_t>);
    absl::StatusOr<Batcher::RequestId> id =
        b->batcher->submit(std::move(request), outId);
    if (!id.ok())
      return report(id.status());
    return DS_OK;
  });
  return code == DS_OK ? code : refuse(code);
}

ds_status_code ds_batcher_cancel(ds_batcher *b, uint64_t id) {
  return guard("ds_batcher_cancel", [&] {
    if (!b)
      return invalid("ds_batcher_cancel", "null batcher");
    if (!b->batcher->cancel(id))
      return fail(DS_NOT_FOUND,
                  absl::StrCat("ds_batcher_cancel: no queued or running "
                               "request ",
                               id));
    return DS_OK;
  });
}

namespace {
struct Greedy {
  ds_completion_fn done;
  void *user;
};
void greedyDone(void *user, const ds_generation_result *r) {
  std::unique_ptr<Greedy> g(static_cast<Greedy *>(user));
  g->done(g->user, r->status, r->message, r->tokens, r->num_tokens);
}
} // namespace

ds_status_code ds_batcher_submit(ds_batcher *b, const int64_t *prompt,
                                 int64_t n, int64_t maxNew,
                                 ds_completion_fn done, void *user) {
  if (!done)
    return invalid("ds_batcher_submit", "null done callback");
  Greedy *g = nullptr;
  ds_status_code code = guard("ds_batcher_submit", [&] {
    g = new Greedy{done, user};
    return DS_OK;
  });
  if (code != DS_OK) {
    done(user, code, lastError.c_str(), nullptr, 0);
    return code;
  }
  ds_generation_options options;
  ds_generation_options_init(&options);
  options.max_new_tokens = maxNew;
  ds_request request{prompt, n, &options, nullptr, greedyDone, g};
  if (!b) {
    // Nothing to submit to, but `done` is still owed its one call.
    delete g;
    invalid("ds_batcher_submit", "null batcher");
    done(user, DS_INVALID_ARGUMENT, lastError.c_str(), nullptr, 0);
    return DS_INVALID_ARGUMENT;
  }
  return ds_batcher_submit_request(b, &request, nullptr);
}

ds_status_code ds_batcher_get_stats(const ds_batcher *b,
                                    ds_batcher_stats *out) {
  return guard("ds_batcher_get_stats", [&] {
    if (!b || !out)
      return invalid("ds_batcher_get_stats", "null argument");
    BatcherStats s = b->batcher->stats();
    *out = {};
    out->queue_depth = s.queueDepth;
    out->max_queue_depth = s.maxQueueDepth;
    out->completed = s.completed;
    out->failed = s.failed;
    out->rejected = s.rejected;
    out->cancelled = s.cancelled;
    out->steps = s.steps;
    out->generated_tokens = s.generatedTokens;
    out->p50_ms = s.p50Ms;
    out->p90_ms = s.p90Ms;
    out->p99_ms = s.p99Ms;
    double seqs = 0;
    for (size_t i = 0; i < s.batchHistogram.size(); ++i)
      seqs += static_cast<double>(i) * s.batchHistogram[i];
    out->mean_batch_size = s.steps ? seqs / s.steps : 0;
    return DS_OK;
  });
}

void ds_batcher_release(ds_batcher *b) { delete b; }

} // extern "C"
