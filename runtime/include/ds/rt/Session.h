//===- Session.h - one model, a KV cache with slots, steps over rows ------===//
//
// A Session owns a KV cache with a fixed number of sequence slots and runs
// the model's @decode function over packed rows (token, position, slot), on
// one executor or split over worker threads; and generates for one
// sequence at a time (SequenceDecoder: sampling, stop tokens, streaming).
// A data-parallel plan's session holds its replica's share of the slots
// and runs the rows in them; every process returns every row's logits.
// The Batcher (Batcher.h) drives one Session for many requests.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_SESSION_H
#define DS_RT_SESSION_H

#include "ds/rt/Executor.h"
#include "ds/rt/Generation.h"
#include "ds/rt/ThreadPool.h"

#include <memory>
#include <vector>

namespace ds::rt {

class Communicator;

/// Kernel worker threads a session may have: at most this many per
/// hardware thread, and 1024.
inline constexpr int64_t kMaxThreadsPerCore = 4;
/// InvalidArgument naming `threads` unless it is in [0, the bound above].
absl::Status checkWorkerThreads(int64_t threads);

/// Steps over rows of many sequences, or generation for one at a time.
class Session {
public:
  /// `threads` kernel worker threads (0: the calling thread only; bounded
  /// by checkWorkerThreads).
  static absl::StatusOr<std::unique_ptr<Session>>
  create(std::shared_ptr<const Model> model, int64_t slots, unsigned threads);

  const Model &model() const { return *model_; }
  /// Sequence slots. A data-parallel plan's session (ModelPlan::batchAxes)
  /// numbers the slots of every replica: slot s is local slot s % (slots /
  /// replicas) of replica s / (slots / replicas); each process keeps only
  /// its replica's, runs the rows of a step that are in them, and the
  /// step's logits are gathered from the replicas (an all-gather over them),
  /// so every process returns every row's.
  int64_t numSlots() const { return slots_; }
  int64_t numReplicas() const { return replicas; }
  /// The data-parallel replica holding slot `slot` (0 without replicas).
  int64_t replicaOfSlot(int64_t slot) const {
    return localSlots ? slot / localSlots : 0;
  }
  int64_t vocabSize() const { return model_->plan().vocabSize; }
  int64_t maxLength() const { return model_->plan().maxCacheLen; }

  /// One step over packed rows: row i is token tokens[i] at positions[i] of
  /// the sequence in slot slots[i]. Returns logits [rows, vocab].
  ///
  /// With worker threads and enough rows, the rows are split into parts
  /// that never share a slot, and each part runs the whole step on its own
  /// thread with its own executor (one wake-up per step, not per op; rows
  /// only meet through their own slot's cache). Otherwise one executor runs
  /// the step and splits large ops over the workers.
  absl::StatusOr<HostTensor> step(const std::vector<int64_t> &tokens,
                                  const std::vector<int64_t> &positions,
                                  const std::vector<int64_t> &slots);
  /// The same, with the logits of rows `logitRows` only (increasing row
  /// indices): returns [logitRows.size(), vocab], each row bit for bit the
  /// row step() gives, and the final projection runs on those rows alone.
  /// A prompt's prefill needs its last row only (generate and the batcher
  /// ask for that).
  absl::StatusOr<HostTensor> step(const std::vector<int64_t> &tokens,
                                  const std::vector<int64_t> &positions,
                                  const std::vector<int64_t> &slots,
                                  const std::vector<int64_t> &logitRows);

  /// Generates for `prompt` in slot `slot`, alone: the prompt in one step
  /// (logits of its last row only), then one step per token, until
  /// max_new_tokens, a stop token or EOS, or `onToken` says stop. An
  /// invalid request or a failed step gives FinishReason::kError.
  GenerationResult generate(const std::vector<int64_t> &prompt,
                            const GenerationOptions &options,
                            const TokenCallback &onToken = nullptr,
                            int64_t slot = 0);
  /// Greedy decoding of up to `maxNew` tokens (stopping at EOS): the tokens,
  /// or the error.
  absl::StatusOr<std::vector<int64_t>>
  generate(const std::vector<int64_t> &prompt, int64_t maxNew,
           int64_t slot = 0);

  /// Lockstep: a partitioned model driven from one process. The leader's
  /// session hands every step it runs (its rows, and the rows whose
  /// logits it wants) to the other processes of `comm` before running it;
  /// each of them runs the same step on its own session through follow(),
  /// so that their collectives meet. Not owned; null ends leading. The
  /// leader must be rank 0 of `comm` (InvalidArgument otherwise). A step
  /// that fails after the followers took it leaves them out of step (they
  /// may wait in a collective this process never joins): every later step
  /// and stopFollowers fail, and the job must end (MPI_Abort), as after a
  /// failed collective.
  absl::Status lead(Communicator *comm);
  /// On a follower: runs the leader's steps until the leader calls
  /// stopFollowers (OK) or a step fails (its error). Its logits are the
  /// leader's business and are dropped.
  absl::Status follow(Communicator &comm);
  /// On the leader: tells the followers to return from follow().
  absl::Status stopFollowers();

  /// The executor of whole steps (and of a split step's first part); its
  /// profiling and memory limit carry over to the other parts' executors.
  Executor &executor() { return exec; }
  /// Step times by kind over every executor of this session (row parts
  /// included; parts that ran at once add up).
  std::string profileReport() const;

  /// Checks a request against the model: options within bounds, token ids
  /// (prompt and stop tokens) in the vocabulary, room in the KV cache.
  absl::Status validate(const std::vector<int64_t> &prompt,
                        const GenerationOptions &options) const;
  /// The model's EOS token ids (from generation_config.json; may be empty).
  const std::vector<int64_t> &eosTokens() const {
    return model_->plan().eosTokenIds;
  }

private:
  Session(std::shared_ptr<const Model> model, KVCache cache, unsigned threads,
          int64_t slots);
  /// stepLocal of a data-parallel plan: this replica's rows, the logits of
  /// all of them gathered.
  absl::StatusOr<HostTensor> stepReplicas(
      const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
      const std::vector<int64_t> &slots, const std::vector<int64_t> *logitRows);
  absl::StatusOr<HostTensor> runRows(Executor &executor,
                                     const std::vector<int64_t> &tokens,
                                     const std::vector<int64_t> &positions,
                                     const std::vector<int64_t> &slots,
                                     const std::vector<int64_t> *logitRows);
  /// stepRows without handing the step to followers.
  absl::StatusOr<HostTensor> stepLocal(const std::vector<int64_t> &tokens,
                                       const std::vector<int64_t> &positions,
                                       const std::vector<int64_t> &slots,
                                       const std::vector<int64_t> *logitRows);
  absl::StatusOr<HostTensor> stepRows(const std::vector<int64_t> &tokens,
                                      const std::vector<int64_t> &positions,
                                      const std::vector<int64_t> &slots,
                                      const std::vector<int64_t> *logitRows);

  std::shared_ptr<const Model> model_;
  KVCache cache;
  std::unique_ptr<ThreadPool> pool;
  Executor exec;
  /// Executors of the row parts after the first (which uses `exec`).
  std::vector<std::unique_ptr<Executor>> partExecs;
  Communicator *leader = nullptr;
  bool leaderBroken = false;
  /// Data parallelism: every replica's slots, this process's replica and
  /// its slots; whether its replicas step together (the experts'
  /// all-to-all joins them: a replica without rows in a step runs a
  /// placeholder row in its spare slot, `localSlots`).
  int64_t slots_ = 0, replicas = 1, replica = 0, localSlots = 0;
  bool jointSteps = false, groupsBuilt = false;
};

/// Boundaries [0 = b0, b1, ..., bP = rows] of up to `parts` contiguous row
/// ranges of about equal size, each boundary moved forward until no slot
/// has rows on both sides of it (fewer ranges when that is impossible):
/// how Session::step splits a step over its workers.
std::vector<int64_t> splitRowsBySlot(const std::vector<int64_t> &slots,
                                     int64_t parts);

} // namespace ds::rt

#endif // DS_RT_SESSION_H
