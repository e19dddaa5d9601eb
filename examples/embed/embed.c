/*===- embed.c - serving a model from a C program through ds_* ------------===*\
|*                                                                            *|
|*   ds-embed-example MODEL [OPTIMIZE]                                        *|
|*                                                                            *|
|* MODEL is a Hugging Face model directory, a .mlir file or a .dsa artifact. *|
|* A directory or .mlir is compiled on first use (ds_model_compile, through   *|
|* the on-disk cache: the second run only loads); an artifact is loaded.     *|
|* Four threads submit 16 requests to a dynamic batcher; every answer is     *|
|* compared with the same prompt generated alone in a session.               *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#include "ds/runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { kRequests = 16, kThreads = 4, kNew = 6, kMaxPrompt = 8 };

typedef struct Request {
  int64_t prompt[kMaxPrompt];
  int64_t length;
  int64_t tokens[kNew];
  ds_status_code status;
  atomic_int done;
} Request;

static Request requests[kRequests];
static ds_batcher *batcher;

static void completed(void *user, ds_status_code status, const char *message,
                      const int64_t *tokens, int64_t n) {
  Request *r = (Request *)user;
  r->status = status;
  if (status == DS_OK && n == kNew)
    memcpy(r->tokens, tokens, sizeof(r->tokens));
  else
    fprintf(stderr, "request failed: %s\n", message);
  atomic_store(&r->done, 1);
}

static void *submitter(void *arg) {
  int t = (int)(intptr_t)arg;
  for (int i = t; i < kRequests; i += kThreads) {
    Request *r = &requests[i];
    if (ds_batcher_submit(batcher, r->prompt, r->length, kNew, completed, r) !=
        DS_OK)
      fprintf(stderr, "submit refused: %s\n", ds_last_error());
  }
  return NULL;
}

static double seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL [OPTIMIZE]\n", argv[0]);
    return 2;
  }
  if (ds_check_abi(DS_VERSION_NUMBER) != DS_OK) {
    fprintf(stderr, "the ds runtime library is incompatible\n");
    return 1;
  }
  const char *path = argv[1];
  size_t len = strlen(path);
  ds_model *model = NULL;
  double start = seconds();
  ds_status_code status =
      len > 4 && strcmp(path + len - 4, ".dsa") == 0
          ? ds_model_load(path, &model)
          : ds_model_compile(path, argc > 2 ? argv[2] : NULL, &model);
  if (status != DS_OK) {
    fprintf(stderr, "%s: %s: %s\n", path, ds_status_code_string(status),
            ds_last_error());
    return 1;
  }
  printf("model ready in %.1f ms: vocabulary %lld, %lld positions\n",
         (seconds() - start) * 1e3, (long long)ds_model_vocab_size(model),
         (long long)ds_model_max_length(model));

  int64_t vocab = ds_model_vocab_size(model);
  for (int i = 0; i < kRequests; ++i) {
    requests[i].length = 1 + i % kMaxPrompt;
    for (int j = 0; j < requests[i].length; ++j)
      requests[i].prompt[j] = (i * 31 + j * 7 + 3) % vocab;
  }
  ds_batcher_options options;
  ds_batcher_options_init(&options);
  options.max_batch_size = 8;
  options.max_wait_us = 1000;
  options.max_queue = 64;
  if (ds_batcher_create(model, &options, &batcher) != DS_OK) {
    fprintf(stderr, "ds_batcher_create: %s\n", ds_last_error());
    return 1;
  }
  pthread_t threads[kThreads];
  for (int t = 0; t < kThreads; ++t)
    pthread_create(&threads[t], NULL, submitter, (void *)(intptr_t)t);
  for (int t = 0; t < kThreads; ++t)
    pthread_join(threads[t], NULL);
  ds_batcher_stats stats;
  ds_batcher_release(batcher); /* finishes every accepted request */

  ds_session *session = NULL;
  if (ds_session_create(model, 0, &session) != DS_OK) {
    fprintf(stderr, "ds_session_create: %s\n", ds_last_error());
    return 1;
  }
  int agree = 0;
  for (int i = 0; i < kRequests; ++i) {
    int64_t alone[kNew];
    if (!atomic_load(&requests[i].done) || requests[i].status != DS_OK ||
        ds_session_generate(session, requests[i].prompt, requests[i].length,
                            kNew, alone) != DS_OK)
      continue;
    agree += memcmp(alone, requests[i].tokens, sizeof(alone)) == 0;
    if (i < 3) {
      printf("request %d:", i);
      for (int j = 0; j < kNew; ++j)
        printf(" %lld", (long long)requests[i].tokens[j]);
      printf("\n");
    }
  }
  printf("batched answers equal to generating alone: %d/%d\n", agree,
         kRequests);
  int64_t bad = vocab + 1;
  int64_t out[kNew];
  status = ds_session_generate(session, &bad, 1, kNew, out);
  printf("bad token: %s: %s\n", ds_status_code_string(status),
         ds_last_error());
  (void)stats;
  ds_session_release(session);
  ds_model_release(model);
  return agree == kRequests ? 0 : 1;
}
