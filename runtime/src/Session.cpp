//===- Session.cpp - steps over packed rows, generation alone -------------===//
//
// Steps run the model's @decode function on rows of length 1. That computes
// what @prefill computes for a prompt: every layer writes all rows' keys and
// values into their slots (ds.cache_update) before attention reads them, and
// each row attends to positions [0, its own] of its slot, so prompt tokens
// packed as rows see exactly their causal prefix.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Session.h"
#include "ds/rt/Device.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cstring>
#include <future>
#include <map>
#include <numeric>
#include <thread>

namespace ds::rt {

//===----------------------------------------------------------------------===//
// Session
//===----------------------------------------------------------------------===//

Session::Session(std::shared_ptr<const Model> model, KVCache cache,
                 unsigned threads, int64_t slots)
    : model_(std::move(model)), cache(std::move(cache)),
      pool(threads ? std::make_unique<ThreadPool>(threads) : nullptr),
      exec(model_, pool.get()), slots_(slots), localSlots(slots) {
  const ModelPlan &plan = model_->plan();
  if (!plan.batchAxes.empty()) {
    GridGroup g = gridGroupOf(plan.grid, plan.batchAxes, plan.process);
    replicas = g.size;
    replica = g.index;
    localSlots = slots / replicas;
    for (const FunctionPlan &f : plan.functions)
      for (const Step &s : f.steps)
        jointSteps |= s.op() == OpCode::MoE && s.as<steps::MoE>().allToAll;
  }
}

absl::Status checkWorkerThreads(int64_t threads) {
  int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  int64_t most = std::min<int64_t>(1024, kMaxThreadsPerCore * cores);
  if (threads < 0 || threads > most)
    return absl::InvalidArgumentError(
        absl::StrCat("threads ", threads, " is outside [0, ", most, "] (",
                     kMaxThreadsPerCore, " per hardware thread)"));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Session>>
Session::create(std::shared_ptr<const Model> model, int64_t slots,
                unsigned threads) {
  if (!model)
    return absl::InvalidArgumentError("no model");
  if (absl::Status s = checkWorkerThreads(threads); !s.ok())
    return s;
  if (!model->plan().find("decode"))
    return absl::InvalidArgumentError(
        "the model has no @decode function (compile an imported model)");
  // A data-parallel plan keeps its replica's share of the slots (and a
  // spare one for placeholder rows).
  const ModelPlan &plan = model->plan();
  int64_t local = slots;
  if (!plan.batchAxes.empty()) {
    const int64_t replicas =
        gridGroupOf(plan.grid, plan.batchAxes, plan.process).size;
    if (slots < replicas || slots % replicas != 0)
      return absl::InvalidArgumentError(
          absl::StrCat(slots, " slots do not split evenly over the ", replicas,
                       " data-parallel replicas"));
    if (plan.vocabSize <= 0)
      return absl::InvalidArgumentError(
          "a data-parallel session needs the model's vocabulary size");
    local = slots / replicas + 1;
  }
  absl::StatusOr<KVCache> cache = KVCache::create(plan, local);
  if (!cache.ok())
    return cache.status();
  return std::unique_ptr<Session>(
      new Session(std::move(model), std::move(*cache), threads, slots));
}

absl::Status Session::validate(const std::vector<int64_t> &prompt,
                               const GenerationOptions &options) const {
  if (prompt.empty())
    return absl::InvalidArgumentError("empty prompt");
  if (absl::Status s = options.validate(); !s.ok())
    return s;
  int64_t vocab = vocabSize();
  auto check = [&](int64_t id, const char *what) {
    if (id < 0 || (vocab > 0 && id >= vocab))
      return absl::InvalidArgumentError(absl::StrCat(
          what, " ", id, " is outside the vocabulary [0, ", vocab, ")"));
    return absl::OkStatus();
  };
  for (int64_t id : prompt)
    if (absl::Status s = check(id, "token id"); !s.ok())
      return s;
  for (int64_t id : options.stopTokens)
    if (absl::Status s = check(id, "stop token"); !s.ok())
      return s;
  int64_t room = maxLength();
  if (room > 0 &&
      static_cast<int64_t>(prompt.size()) > room - options.maxNewTokens + 1)
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", prompt.size(), " tokens) plus ", options.maxNewTokens,
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

namespace {
/// What a lockstep leader hands its followers before each step: [kind,
/// rows, logit rows or -1 for all], then tokens, positions, slots and the
/// logit rows. Sent as floats through an all-reduce the followers join
/// with zeros (a broadcast from the leader; ids, positions and slots are
/// below 2^24, exact in floats).
enum LockstepKind : int { kLockstepStep = 1, kLockstepStop = 2 };

/// The rows whose logits a step returns (null: all of `n`) increase
/// within [0, n).
absl::Status checkLogitRows(const std::vector<int64_t> *logitRows, int64_t n) {
  if (logitRows)
    for (size_t i = 0; i < logitRows->size(); ++i) {
      int64_t r = (*logitRows)[i], prev = i ? (*logitRows)[i - 1] : -1;
      if (r <= prev || r >= n)
        return absl::InvalidArgumentError(
            absl::StrCat("logit rows must increase within [0, ", n, "); got ",
                         r, " after ", prev));
    }
  return absl::OkStatus();
}

absl::Status broadcastFromLeader(Communicator &comm, std::vector<float> &data) {
  if (comm.rank() != 0)
    std::fill(data.begin(), data.end(), 0.0f);
  return comm.allReduceSum(data.data(), static_cast<int64_t>(data.size()));
}
} // namespace

absl::Status Session::lead(Communicator *comm) {
  if (comm && comm->rank() != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "a lockstep leader broadcasts as rank 0 of its communicator; this "
        "process is rank ",
        comm->rank()));
  leader = comm;
  leaderBroken = false;
  return absl::OkStatus();
}

absl::Status Session::stopFollowers() {
  if (!leader)
    return absl::FailedPreconditionError("this session leads no followers");
  if (leaderBroken)
    return absl::FailedPreconditionError(
        "the followers are out of step after a failed step: end the job");
  std::vector<float> header = {static_cast<float>(kLockstepStop), 0, 0};
  return broadcastFromLeader(*leader, header);
}

absl::Status Session::follow(Communicator &comm) {
  for (;;) {
    std::vector<float> header(3);
    if (absl::Status st = broadcastFromLeader(comm, header); !st.ok())
      return st;
    if (static_cast<int>(header[0]) == kLockstepStop)
      return absl::OkStatus();
    const int64_t n = static_cast<int64_t>(header[1]);
    const int64_t wanted = static_cast<int64_t>(header[2]);
    if (static_cast<int>(header[0]) != kLockstepStep || n < 0 || wanted < -1)
      return absl::DataLossError("a lockstep message that is not a step");
    std::vector<float> payload(3 * n + std::max<int64_t>(wanted, 0));
    if (absl::Status st = broadcastFromLeader(comm, payload); !st.ok())
      return st;
    std::vector<int64_t> tokens(n), positions(n), slots(n), rows;
    for (int64_t i = 0; i < n; ++i) {
      tokens[i] = static_cast<int64_t>(payload[i]);
      positions[i] = static_cast<int64_t>(payload[n + i]);
      slots[i] = static_cast<int64_t>(payload[2 * n + i]);
    }
    for (int64_t i = 0; i < wanted; ++i)
      rows.push_back(static_cast<int64_t>(payload[3 * n + i]));
    absl::StatusOr<HostTensor> out =
        stepRows(tokens, positions, slots, wanted >= 0 ? &rows : nullptr);
    if (!out.ok())
      return out.status();
  }
}

absl::StatusOr<HostTensor> Session::stepRows(
    const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
    const std::vector<int64_t> &slots, const std::vector<int64_t> *logitRows) {
  if (!leader)
    return stepLocal(tokens, positions, slots, logitRows);
  if (leaderBroken)
    return absl::FailedPreconditionError(
        "an earlier lockstep step failed after the other ranks took it: "
        "they are out of step (end the job)");
  const int64_t n = static_cast<int64_t>(tokens.size());
  {
    // The followers run this very step before the collectives meet: what
    // a step would refuse is refused before they take it.
    if (positions.size() != tokens.size() || slots.size() != tokens.size())
      return absl::InvalidArgumentError(
          "tokens, positions and slots must have one entry per row");
    if (n >= (int64_t{1} << 24))
      return absl::InvalidArgumentError(
          absl::StrCat(n, " rows in one lockstep step, more than 2^24"));
    if (absl::Status st = checkLogitRows(logitRows, n); !st.ok())
      return st;
    const int64_t wanted =
        logitRows ? static_cast<int64_t>(logitRows->size()) : -1;
    for (const std::vector<int64_t> *v : {&tokens, &positions, &slots})
      for (int64_t x : *v)
        if (x < 0 || x >= (int64_t{1} << 24))
          return absl::InvalidArgumentError(absl::StrCat(
              "a lockstep step carries ", x,
              ", outside the ids, positions and slots it can hand out"));
    for (int64_t s : slots)
      if (s >= numSlots())
        return absl::InvalidArgumentError(absl::StrCat(
            "cache slot ", s, " is outside [0, ", numSlots(), ")"));
    std::vector<float> header = {static_cast<float>(kLockstepStep),
                                 static_cast<float>(n),
                                 static_cast<float>(wanted)};
    std::vector<float> payload;
    for (const std::vector<int64_t> *v : {&tokens, &positions, &slots})
      for (int64_t x : *v)
        payload.push_back(static_cast<float>(x));
    if (logitRows)
      for (int64_t r : *logitRows)
        payload.push_back(static_cast<float>(r));
    if (absl::Status st = broadcastFromLeader(*leader, header); !st.ok())
      return st;
    if (absl::Status st = broadcastFromLeader(*leader, payload); !st.ok())
      return st;
  }
  absl::StatusOr<HostTensor> out =
      stepLocal(tokens, positions, slots, logitRows);
  if (!out.ok()) {
    // The followers may be waiting in a collective this rank never joins.
    leaderBroken = true;
    return absl::Status(out.status().code(),
                        absl::StrCat(out.status().message(),
                                     " (a lockstep step: the other ranks "
                                     "are out of step; end the job)"));
  }
  return out;
}

absl::StatusOr<HostTensor> Session::stepReplicas(
    const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
    const std::vector<int64_t> &slots, const std::vector<int64_t> *logitRows) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (positions.size() != tokens.size() || slots.size() != tokens.size())
    return absl::InvalidArgumentError(
        "tokens, positions and slots must have one entry per row");
  for (int64_t s : slots)
    if (s < 0 || s >= slots_)
      return absl::InvalidArgumentError(
          absl::StrCat("cache slot ", s, " is outside [0, ", slots_, ")"));
  Communicator *world = processCommunicator().get();
  const ModelPlan &plan = model_->plan();
  if (!world || world->size() != plan.processes ||
      world->rank() != plan.process)
    return absl::FailedPreconditionError(
        "a data-parallel session runs one process per rank under mpirun");
  if (!groupsBuilt) {
    // Replicas without rows skip steps: the groups are built here, on
    // every process at its first step, in one order. Whether replicas
    // step together is the job's answer, not this plan's (a pipeline
    // stage without MoE layers must step with its replica's other stages).
    if (absl::Status st = buildAllGroups(*world, plan.grid); !st.ok())
      return st;
    float joint = jointSteps ? 1.0f : 0.0f;
    if (absl::Status st = world->allReduceSum(&joint, 1); !st.ok())
      return st;
    jointSteps = joint > 0;
    groupsBuilt = true;
  }
  // This replica's rows, in their local slots; the wanted rows among them.
  std::vector<int64_t> mine, myTokens, myPositions, mySlots, myWanted, outRow;
  for (int64_t i = 0; i < n; ++i)
    if (replicaOfSlot(slots[i]) == replica) {
      mine.push_back(i);
      myTokens.push_back(tokens[i]);
      myPositions.push_back(positions[i]);
      mySlots.push_back(slots[i] % localSlots);
    }
  const int64_t rowsOut =
      logitRows ? static_cast<int64_t>(logitRows->size()) : n;
  if (logitRows) {
    for (int64_t w = 0; w < rowsOut; ++w) {
      auto it = std::lower_bound(mine.begin(), mine.end(), (*logitRows)[w]);
      if (it != mine.end() && *it == (*logitRows)[w]) {
        myWanted.push_back(it - mine.begin());
        outRow.push_back(w);
      }
    }
  } else {
    outRow = mine;
    for (size_t i = 0; i < mine.size(); ++i)
      myWanted.push_back(static_cast<int64_t>(i));
  }
  const int64_t vocab = vocabSize();
  HostTensor logits(DType::F32, {rowsOut, vocab});
  if (!mine.empty()) {
    // Rows whose logits nobody wants still run (their keys and values):
    // the last one's logits are computed and dropped.
    std::vector<int64_t> rows =
        myWanted.empty()
            ? std::vector<int64_t>{static_cast<int64_t>(mine.size() - 1)}
            : myWanted;
    absl::StatusOr<HostTensor> out =
        runRows(exec, myTokens, myPositions, mySlots, &rows);
    if (!out.ok())
      return out.status();
    if (out->shape.back() != vocab)
      return absl::InternalError("logits of another width than the vocabulary");
    for (size_t i = 0; i < outRow.size(); ++i)
      std::memcpy(logits.data<float>() + outRow[i] * vocab,
                  out->data<float>() + i * vocab, vocab * sizeof(float));
  } else if (jointSteps) {
    // The replicas' all-to-alls meet in every step: a placeholder row in
    // the spare slot.
    absl::StatusOr<HostTensor> out =
        runRows(exec, {0}, {0}, {localSlots}, nullptr);
    if (!out.ok())
      return out.status();
  }
  // Each replica's rows of the logits, gathered: every rank knows which
  // output rows each replica holds (from the slots), so each hands in its
  // own, padded to the most any replica has, and places the others'.
  std::vector<std::vector<int64_t>> rowsOf(replicas);
  for (int64_t w = 0; w < rowsOut; ++w)
    rowsOf[replicaOfSlot(slots[logitRows ? (*logitRows)[w] : w])].push_back(w);
  size_t most = 0;
  for (const auto &r : rowsOf)
    most = std::max(most, r.size());
  if (most == 0)
    return logits;
  absl::StatusOr<Communicator *> group =
      world->group(plan.grid, plan.batchAxes);
  if (!group.ok())
    return group.status();
  const int64_t block = static_cast<int64_t>(most) * vocab;
  std::vector<float> mineRows(block, 0.0f), all(block * replicas);
  for (size_t k = 0; k < outRow.size(); ++k)
    std::memcpy(mineRows.data() + k * vocab,
                logits.data<float>() + outRow[k] * vocab,
                vocab * sizeof(float));
  if (absl::Status st = (*group)->allGather(mineRows.data(), block, all.data());
      !st.ok())
    return st;
  for (int64_t q = 0; q < replicas; ++q)
    for (size_t k = 0; k < rowsOf[q].size(); ++k)
      std::memcpy(logits.data<float>() + rowsOf[q][k] * vocab,
                  all.data() + q * block + k * vocab, vocab * sizeof(float));
  return logits;
}

absl::StatusOr<HostTensor> Session::stepLocal(
    const std::vector<int64_t> &tokens, const std::vector<int64_t> &positions,
    const std::vector<int64_t> &slots, const std::vector<int64_t> *logitRows) {
  int64_t n = static_cast<int64_t>(tokens.size());
  if (absl::Status st = checkLogitRows(logitRows, n); !st.ok())
    return st;
  if (replicas > 1)
    return stepReplicas(tokens, positions, slots, logitRows);
  int64_t width = pool ? pool->numWorkers() + 1 : 1;
  int64_t parts = std::min<int64_t>(width, n / kMinRowsPerPart);
  std::vector<int64_t> bounds;
  // A partitioned plan's collectives are one call per step of this
  // process: its rows run in one executor, never in parts.
  if (parts >= 2 && positions.size() == tokens.size() &&
      slots.size() == tokens.size() && model_->plan().processes == 1)
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
  // If anything below throws, the parts already on the workers are waited
  // for before this frame (which they read) goes away.
  struct WaitAll {
    std::vector<std::future<absl::StatusOr<HostTensor>>> &futures;
    ~WaitAll() {
      for (auto &f : futures)
        if (f.valid())
          f.wait();
    }
  } waitAll{pending};
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

GenerationResult Session::generate(const std::vector<int64_t> &prompt,
                                   const GenerationOptions &options,
                                   const TokenCallback &onToken, int64_t slot) {
  int64_t promptTokens = static_cast<int64_t>(prompt.size());
  if (absl::Status s = validate(prompt, options); !s.ok())
    return GenerationResult::error(std::move(s), promptTokens);
  if (slot < 0 || slot >= numSlots())
    return GenerationResult::error(
        absl::InvalidArgumentError(
            absl::StrCat("slot ", slot, " is outside [0, ", numSlots(), ")")),
        promptTokens);
  if (replicaOfSlot(slot) == replica)
    cache.clearSlot(slot % localSlots);
  SequenceDecoder seq(prompt, options, onToken, eosTokens(), vocabSize());
  std::vector<int64_t> positions(prompt.size()), slots(prompt.size(), slot);
  std::iota(positions.begin(), positions.end(), int64_t{0});
  // The prompt's last row is the only one whose logits are needed.
  absl::StatusOr<HostTensor> logits =
      step(prompt, positions, slots, {promptTokens - 1});
  while (logits.ok() && seq.advance(logits->data<float>()))
    logits = step({seq.nextToken()}, {seq.nextPosition()}, {slot});
  if (!logits.ok())
    seq.finish(FinishReason::kError, logits.status());
  return seq.take();
}

absl::StatusOr<std::vector<int64_t>>
Session::generate(const std::vector<int64_t> &prompt, int64_t maxNew,
                  int64_t slot) {
  GenerationOptions options;
  options.maxNewTokens = maxNew;
  GenerationResult r = generate(prompt, options, nullptr, slot);
  if (r.finishReason == FinishReason::kError)
    return r.status;
  return std::move(r.tokens);
}

} // namespace ds::rt
