/*===- ds/runtime.h - the ds runtime C API ------------------------*- C -*-===*\
|*                                                                            *|
|* The stable C entry points of the ds runtime: models (artifacts, or       *|
|* compiled on first use when the compiler is present), sessions that       *|
|* generate with a KV cache, and a dynamic batcher many threads submit to.  *|
|* Handles are opaque; every call returns a status code and, on failure,    *|
|* leaves a message for ds_last_error(). No MLIR or LLVM types appear here, *|
|* and no C++ exception crosses this boundary.                              *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef DS_RUNTIME_H
#define DS_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Result of every ds_* call.
typedef enum ds_status_code {
  DS_OK = 0,
  DS_INVALID_ARGUMENT = 1,
  DS_NOT_FOUND = 2,
  DS_OUT_OF_MEMORY = 3,
  DS_UNIMPLEMENTED = 4,
  DS_INTERNAL = 5,
  DS_UNAVAILABLE = 6,
  DS_DATA_LOSS = 7,
} ds_status_code;

/// "major.minor.patch" of the runtime library.
const char *ds_version_string(void);

/// The runtime's version as major * 10000 + minor * 100 + patch.
int ds_version_number(void);

/// A short, static, human-readable name for a status code ("ok",
/// "invalid argument", ...); "unknown status" for values outside the enum.
const char *ds_status_code_string(int code);

/// Compares the version a program was built against with the loaded
/// library; DS_OK when the major versions agree, else DS_UNAVAILABLE.
ds_status_code ds_check_abi(int built_against_version_number);

/// The message of the last failed ds_* call on this thread ("" if none).
const char *ds_last_error(void);

typedef struct ds_model ds_model;
typedef struct ds_session ds_session;
typedef struct ds_batcher ds_batcher;

/// Loads an artifact written by ds-compile (no compiler needed).
ds_status_code ds_model_load(const char *artifact_path, ds_model **out);

/// Compiles a Hugging Face model directory or a .mlir file on first use and
/// loads it; later calls with the same inputs load the cached artifact
/// ($DS_CACHE_DIR, default ~/.cache/ds). `optimize` holds ds-optimize options
/// ("quantize=int8", or NULL for the defaults). DS_UNIMPLEMENTED when the
/// program was built without the compiler (link DS::DSCodegen).
ds_status_code ds_model_compile(const char *path, const char *optimize,
                                ds_model **out);

/// Vocabulary size and KV cache capacity (positions) of a model.
int64_t ds_model_vocab_size(const ds_model *model);
int64_t ds_model_max_length(const ds_model *model);
void ds_model_release(ds_model *model);

/// A session generates for one caller at a time; `threads` kernel workers.
ds_status_code ds_session_create(ds_model *model, int threads,
                                 ds_session **out);
/// Greedy generation: writes max_new_tokens ids to `out_tokens`.
ds_status_code ds_session_generate(ds_session *session, const int64_t *prompt,
                                   int64_t prompt_length,
                                   int64_t max_new_tokens, int64_t *out_tokens);
void ds_session_release(ds_session *session);

typedef struct ds_batcher_options {
  int64_t max_batch_size; /* sequences per step (default 32) */
  int64_t max_wait_us;    /* an idle batcher waits this long to fill a batch */
  int64_t max_queue;      /* waiting requests beyond this are refused */
  int threads;            /* kernel worker threads */
} ds_batcher_options;

/// Called once per request, on the batcher's thread (or inline when the
/// request is refused); `tokens` is valid during the call only.
typedef void (*ds_completion_fn)(void *user, ds_status_code status,
                                 const char *message, const int64_t *tokens,
                                 int64_t num_tokens);

ds_status_code ds_batcher_create(ds_model *model,
                                 const ds_batcher_options *options,
                                 ds_batcher **out);
/// Queues a request; `done` is called exactly once. DS_UNAVAILABLE (queue
/// full) or DS_INVALID_ARGUMENT when refused (after calling `done`).
ds_status_code ds_batcher_submit(ds_batcher *batcher, const int64_t *prompt,
                                 int64_t prompt_length, int64_t max_new_tokens,
                                 ds_completion_fn done, void *user);

typedef struct ds_batcher_stats {
  int64_t queue_depth, max_queue_depth, completed, failed, rejected, steps,
      generated_tokens;
  double p50_ms, p90_ms, p99_ms, mean_batch_size;
} ds_batcher_stats;
ds_status_code ds_batcher_get_stats(const ds_batcher *batcher,
                                    ds_batcher_stats *out);
/// Finishes every accepted request, then frees the batcher.
void ds_batcher_release(ds_batcher *batcher);

#define DS_VERSION_MAJOR 0
#define DS_VERSION_MINOR 1
#define DS_VERSION_PATCH 0
#define DS_VERSION_NUMBER                                                      \
  (DS_VERSION_MAJOR * 10000 + DS_VERSION_MINOR * 100 + DS_VERSION_PATCH)

#ifdef __cplusplus
} // extern "C"
#endif

#endif // DS_RUNTIME_H
