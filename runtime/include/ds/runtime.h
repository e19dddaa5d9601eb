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

/* Conventions
 *
 * - Every call returns a status code; on failure it leaves a message that
 *   ds_last_error() returns on the same thread until the next failure (a
 *   successful call does not clear it). No C++ exception crosses this API:
 *   every entry point catches everything (allocation failure becomes
 *   DS_OUT_OF_MEMORY, anything else DS_INTERNAL).
 * - Handles are opaque. Whoever receives one from a *_create / *_load /
 *   *_compile call owns it and frees it with the matching *_release, which
 *   accepts NULL. A session or batcher keeps its model alive: the model may
 *   be released right after creating them.
 * - Options structs are filled by their *_options_init function first; a
 *   field outside its documented bounds is refused with DS_INVALID_ARGUMENT
 *   naming the field (so a zeroed struct is refused, not read as zeros).
 *   A NULL options pointer means the defaults.
 * - Thread safety is stated per handle below.
 */

/// Result of every ds_* call.
typedef enum ds_status_code {
  DS_OK = 0,
  DS_INVALID_ARGUMENT = 1,   ///< a bad argument, option or request
  DS_NOT_FOUND = 2,          ///< a missing file, function or request id
  DS_OUT_OF_MEMORY = 3,      ///< an allocation failed, or the memory limit
  DS_UNIMPLEMENTED = 4,      ///< not in this build (e.g. no compiler linked)
  DS_INTERNAL = 5,           ///< a bug in ds: please report it
  DS_UNAVAILABLE = 6,        ///< shutting down, or the CPU lacks a feature
  DS_DATA_LOSS = 7,          ///< a corrupted or truncated file
  DS_RESOURCE_EXHAUSTED = 8, ///< the batcher's queue is full: retry later
} ds_status_code;

/// "major.minor.patch" of the runtime library.
const char *ds_version_string(void);

/// The runtime's version as major * 10000 + minor * 100 + patch.
int ds_version_number(void);

/// A short, static, human-readable name for a status code ("ok",
/// "invalid argument", ...); "unknown status" for values outside the enum.
const char *ds_status_code_string(int code);

/// Compares the version a program was built against with the loaded
/// library: DS_OK when the major versions agree (before 1.0, the minor
/// versions too, and after it the library's minor version is at least the
/// program's), else DS_UNAVAILABLE with a message naming both versions.
ds_status_code ds_check_abi(int built_against_version_number);

/// The message of the last failed ds_* call on this thread ("" if none).
/// Valid until the next failing call on this thread.
const char *ds_last_error(void);

/*===-- Models --------------------------------------------------------===*/

/// A loaded model: immutable, shared by any number of sessions and
/// batchers on any threads. All model functions are thread-safe.
typedef struct ds_model ds_model;

/// Loads an artifact written by ds-compile (no compiler needed). Refused
/// (DS_UNAVAILABLE) when this CPU lacks an instruction set the artifact's
/// code needs, naming them.
ds_status_code ds_model_load(const char *artifact_path, ds_model **out);

/// Compiles a Hugging Face model directory or a .mlir file on first use and
/// loads it; later calls with the same inputs load the cached artifact
/// ($DS_CACHE_DIR, default ~/.cache/ds). `optimize` holds ds-optimize options
/// ("quantize=int8", or NULL for the defaults). DS_UNIMPLEMENTED when the
/// program was built without the compiler (link DS::DSCodegen).
ds_status_code ds_model_compile(const char *path, const char *optimize,
                                ds_model **out);

/// Vocabulary size and KV cache capacity (positions) of a model; 0 for NULL.
int64_t ds_model_vocab_size(const ds_model *model);
int64_t ds_model_max_length(const ds_model *model);
/// The model's EOS token ids (generation_config.json): writes up to
/// `capacity` ids and returns how many there are.
int64_t ds_model_eos_tokens(const ds_model *model, int64_t *ids,
                            int64_t capacity);
void ds_model_release(ds_model *model);

/*===-- Generation options and results --------------------------------===*/

/// How tokens are chosen and when generation stops. Applied in this order:
/// repetition penalty, temperature, top-k, top-p, min-p, then a draw from
/// the request's seed. The same seed, prompt and options give the same
/// tokens, alone or in any batch.
typedef struct ds_generation_options {
  int64_t max_new_tokens;     /* >= 1, and prompt + max_new_tokens - 1 must
                                 fit the KV cache (default 16) */
  double temperature;         /* [0, 100]; 0 = greedy (default 0) */
  int64_t top_k;              /* >= 0; 0 = all tokens (default 0) */
  double top_p;               /* (0, 1] (default 1) */
  double min_p;               /* [0, 1] (default 0) */
  double repetition_penalty;  /* (0, 100]; 1 = none (default 1) */
  uint64_t seed;              /* (default 0) */
  const int64_t *stop_tokens; /* ids that end the generation besides EOS;
                                 copied at submission (default NULL) */
  int64_t num_stop_tokens;    /* [0, 64] (default 0) */
  int ignore_eos;             /* nonzero: do not stop at the model's EOS */
  int logprobs;               /* -1: none; 0: the chosen token's; n in
                                 [1, 20]: and the n most likely (default -1) */
} ds_generation_options;

/// Fills `options` with the defaults above (greedy, 16 tokens).
void ds_generation_options_init(ds_generation_options *options);

typedef enum ds_finish_reason {
  DS_FINISH_LENGTH = 0,    /* max_new_tokens reached */
  DS_FINISH_STOP = 1,      /* a stop token or EOS, or the token callback */
  DS_FINISH_CANCELLED = 2, /* ds_batcher_cancel */
  DS_FINISH_ERROR = 3,     /* see the result's status and message */
} ds_finish_reason;

/// "length", "stop", "cancelled", "error"; "unknown" otherwise.
const char *ds_finish_reason_string(int reason);

typedef struct ds_token_logprob {
  int64_t token;
  float logprob;
} ds_token_logprob;

/// One generated token, for streaming. Pointers are valid during the
/// callback only.
typedef struct ds_token_event {
  int64_t token;
  int64_t index;               /* 0 for the first generated token */
  float logprob;               /* when options.logprobs >= 0 */
  const ds_token_logprob *top; /* options.logprobs alternatives, best first */
  int64_t num_top;
} ds_token_event;

/// Called after each generated token (not for a stop token). Return 0 to
/// continue, nonzero to end the generation (DS_FINISH_STOP).
typedef int (*ds_token_fn)(void *user, const ds_token_event *event);

/// How a generation ended. Pointers are valid during the callback (batcher)
/// or until the next call on the session.
typedef struct ds_generation_result {
  ds_status_code status; /* DS_OK unless finish_reason is DS_FINISH_ERROR */
  const char *message;   /* "" when status is DS_OK */
  ds_finish_reason finish_reason;
  const int64_t *tokens; /* the generated tokens, without a stop token */
  int64_t num_tokens;
  int64_t stop_token; /* the stop or EOS token that ended it, or -1 */
  int64_t prompt_tokens;
  int64_t completion_tokens; /* tokens produced, a stop token included */
  const float *logprobs; /* num_tokens entries when logprobs >= 0, else NULL */
} ds_generation_result;

/*===-- Sessions ------------------------------------------------------===*/

/// One sequence at a time, generated on the calling thread. Not thread-safe:
/// one call at a time per session (use a batcher for concurrent callers).
typedef struct ds_session ds_session;

/// `threads` kernel workers besides the caller: [0, 4 per hardware thread].
ds_status_code ds_session_create(ds_model *model, int threads,
                                 ds_session **out);

/// Generates for `prompt` ([1, ...] ids in the vocabulary) under `options`
/// (NULL: defaults), calling `on_token` (may be NULL) after every token.
/// `result` is filled on DS_OK and on a generation error (the return value
/// then equals result->status); its pointers stay valid until the next call
/// on this session. Invalid arguments return DS_INVALID_ARGUMENT and leave
/// `result` untouched.
ds_status_code ds_session_run(ds_session *session, const int64_t *prompt,
                              int64_t prompt_length,
                              const ds_generation_options *options,
                              ds_token_fn on_token, void *user,
                              ds_generation_result *result);

/// Greedy generation of exactly max_new_tokens ids (EOS ignored) into
/// `out_tokens`.
ds_status_code ds_session_generate(ds_session *session, const int64_t *prompt,
                                   int64_t prompt_length,
                                   int64_t max_new_tokens, int64_t *out_tokens);
void ds_session_release(ds_session *session);

/*===-- Batcher -------------------------------------------------------===*/

/// Serves many threads: ds_batcher_submit*, ds_batcher_cancel and
/// ds_batcher_get_stats are thread-safe. ds_batcher_release must not race
/// with them, and must not be called from a batcher callback.
typedef struct ds_batcher ds_batcher;

typedef struct ds_batcher_options {
  int64_t max_batch_size; /* sequences per step = KV cache slots:
                             [1, 4096] (default 32) */
  int64_t max_wait_us;    /* an idle batcher waits this long to fill a
                             batch: [0, 10000000] (default 2000) */
  int64_t max_queue;      /* waiting requests beyond this are refused with
                             DS_RESOURCE_EXHAUSTED: [1, 1048576]
                             (default 1024) */
  int threads;            /* kernel worker threads: [0, 4 per hardware
                             thread, at most 1024] (default 0) */
} ds_batcher_options;

/// Fills `options` with the defaults above.
void ds_batcher_options_init(ds_batcher_options *options);

ds_status_code ds_batcher_create(ds_model *model,
                                 const ds_batcher_options *options,
                                 ds_batcher **out);

/// Called exactly once per submitted request, on the batcher's thread, or
/// inline from the submit call when the request is refused; `result` and
/// what it points to are valid during the call only.
typedef void (*ds_result_fn)(void *user, const ds_generation_result *result);

typedef struct ds_request {
  const int64_t *prompt; /* copied at submission */
  int64_t prompt_length;
  const ds_generation_options *options; /* NULL: defaults; copied */
  ds_token_fn on_token; /* streaming, on the batcher's thread; may be NULL */
  ds_result_fn done;    /* required */
  void *user;           /* passed to both callbacks */
} ds_request;

/// Queues a request and writes its id to `out_id` (may be NULL) before the
/// request can complete. When
/// refused - DS_INVALID_ARGUMENT (bad request or options),
/// DS_RESOURCE_EXHAUSTED (queue full), DS_UNAVAILABLE (shutting down) -
/// `done` has been called with that status before this returns (unless
/// `batcher`, `request` or `done` is NULL: nothing to call then).
ds_status_code ds_batcher_submit_request(ds_batcher *batcher,
                                         const ds_request *request,
                                         uint64_t *out_id);

/// Cancels a queued or running request: it completes with
/// DS_FINISH_CANCELLED and the tokens it has; a running one leaves at the
/// next step, freeing its slot. DS_NOT_FOUND when the id is unknown or the
/// request already finished.
ds_status_code ds_batcher_cancel(ds_batcher *batcher, uint64_t id);

/// Greedy shorthand: called once per request, like ds_result_fn; `tokens`
/// is valid during the call only.
typedef void (*ds_completion_fn)(void *user, ds_status_code status,
                                 const char *message, const int64_t *tokens,
                                 int64_t num_tokens);
/// Greedy generation of up to max_new_tokens (stopping at EOS); `done` is
/// called exactly once, refusals included (whenever it is not NULL).
ds_status_code ds_batcher_submit(ds_batcher *batcher, const int64_t *prompt,
                                 int64_t prompt_length, int64_t max_new_tokens,
                                 ds_completion_fn done, void *user);

typedef struct ds_batcher_stats {
  int64_t queue_depth, max_queue_depth, completed, failed, rejected, steps,
      generated_tokens;
  double p50_ms, p90_ms, p99_ms, mean_batch_size;
  int64_t cancelled;
} ds_batcher_stats;
ds_status_code ds_batcher_get_stats(const ds_batcher *batcher,
                                    ds_batcher_stats *out);
/// Finishes every accepted request (their callbacks run), then frees the
/// batcher.
void ds_batcher_release(ds_batcher *batcher);

#define DS_VERSION_MAJOR 0
#define DS_VERSION_MINOR 2
#define DS_VERSION_PATCH 0
#define DS_VERSION_NUMBER                                                      \
  (DS_VERSION_MAJOR * 10000 + DS_VERSION_MINOR * 100 + DS_VERSION_PATCH)

#ifdef __cplusplus
} // extern "C"
#endif

#endif // DS_RUNTIME_H
