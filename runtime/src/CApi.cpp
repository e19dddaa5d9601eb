//===- CApi.cpp - the ds_* C entry points ---------------------------------===//
//
// Thin wrappers over Model, Session and Batcher: absl::Status becomes a
// status code plus a thread-local message, and nothing throws across.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/rt/Compile.h"
#include "ds/runtime.h"

#include <atomic>
#include <cstring>
#include <dlfcn.h>

using namespace ds::rt;

struct ds_model {
  std::shared_ptr<const Model> model;
};
struct ds_session {
  std::unique_ptr<Session> session;
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
    return DS_UNAVAILABLE;
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

ds_status_code report(const absl::Status &s) {
  lastError = s.ok() ? "" : std::string(s.message());
  return toCode(s);
}

std::atomic<CompileHook> compileHook{nullptr};
} // namespace

void ds::rt::setCompileHook(CompileHook hook) { compileHook.store(hook); }

extern "C" {

const char *ds_last_error(void) { return lastError.c_str(); }

ds_status_code ds_model_load(const char *path, ds_model **out) {
  if (!path || !out)
    return report(absl::InvalidArgumentError("null argument"));
  absl::StatusOr<std::shared_ptr<Model>> m = Model::load(path);
  if (!m.ok())
    return report(m.status());
  *out = new ds_model{std::move(*m)};
  return report(absl::OkStatus());
}

ds_status_code ds_model_compile(const char *path, const char *optimize,
                                ds_model **out) {
  if (!path || !out)
    return report(absl::InvalidArgumentError("null argument"));
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
  return report(absl::OkStatus());
}

int64_t ds_model_vocab_size(const ds_model *m) {
  return m ? m->model->plan().vocabSize : 0;
}
int64_t ds_model_max_length(const ds_model *m) {
  return m ? m->model->plan().maxCacheLen : 0;
}
void ds_model_release(ds_model *m) { delete m; }

ds_status_code ds_session_create(ds_model *m, int threads, ds_session **out) {
  if (!m || !out || threads < 0)
    return report(absl::InvalidArgumentError("bad argument"));
  auto s = Session::create(m->model, 1, static_cast<unsigned>(threads));
  if (!s.ok())
    return report(s.status());
  *out = new ds_session{std::move(*s)};
  return report(absl::OkStatus());
}

ds_status_code ds_session_generate(ds_session *s, const int64_t *prompt,
                                   int64_t n, int64_t maxNew,
                                   int64_t *outTokens) {
  if (!s || !prompt || n <= 0 || !outTokens)
    return report(absl::InvalidArgumentError("bad argument"));
  auto r =
      s->session->generate(std::vector<int64_t>(prompt, prompt + n), maxNew, 0);
  if (!r.ok())
    return report(r.status());
  std::memcpy(outTokens, r->data(), r->size() * sizeof(int64_t));
  return report(absl::OkStatus());
}

void ds_session_release(ds_session *s) { delete s; }

ds_status_code ds_batcher_create(ds_model *m, const ds_batcher_options *o,
                                 ds_batcher **out) {
  if (!m || !out)
    return report(absl::InvalidArgumentError("null argument"));
  BatcherOptions options;
  if (o) {
    if (o->max_batch_size > 0)
      options.maxBatchSize = o->max_batch_size;
    if (o->max_wait_us >= 0)
      options.maxWait = std::chrono::microseconds(o->max_wait_us);
    if (o->max_queue > 0)
      options.maxQueue = o->max_queue;
    if (o->threads > 0)
      options.threads = static_cast<unsigned>(o->threads);
  }
  auto b = Batcher::create(m->model, options);
  if (!b.ok())
    return report(b.status());
  *out = new ds_batcher{std::move(*b)};
  return report(absl::OkStatus());
}

ds_status_code ds_batcher_submit(ds_batcher *b, const int64_t *prompt,
                                 int64_t n, int64_t maxNew,
                                 ds_completion_fn done, void *user) {
  if (!b || !prompt || n <= 0 || !done)
    return report(absl::InvalidArgumentError("bad argument"));
  absl::Status s = b->batcher->submit(
      std::vector<int64_t>(prompt, prompt + n), maxNew,
      [done, user](Batcher::Result r) {
        if (r.ok())
          done(user, DS_OK, "", r->data(), static_cast<int64_t>(r->size()));
        else
          done(user, toCode(r.status()),
               std::string(r.status().message()).c_str(), nullptr, 0);
      });
  return report(s);
}

ds_status_code ds_batcher_get_stats(const ds_batcher *b,
                                    ds_batcher_stats *out) {
  if (!b || !out)
    return report(absl::InvalidArgumentError("null argument"));
  BatcherStats s = b->batcher->stats();
  out->queue_depth = s.queueDepth;
  out->max_queue_depth = s.maxQueueDepth;
  out->completed = s.completed;
  out->failed = s.failed;
  out->rejected = s.rejected;
  out->steps = s.steps;
  out->generated_tokens = s.generatedTokens;
  out->p50_ms = s.p50Ms;
  out->p90_ms = s.p90Ms;
  out->p99_ms = s.p99Ms;
  double seqs = 0;
  for (size_t i = 0; i < s.batchHistogram.size(); ++i)
    seqs += static_cast<double>(i) * s.batchHistogram[i];
  out->mean_batch_size = s.steps ? seqs / s.steps : 0;
  return report(absl::OkStatus());
}

void ds_batcher_release(ds_batcher *b) { delete b; }

} // extern "C"
