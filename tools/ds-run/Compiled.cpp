//===- Compiled.cpp - ds-run on compiled code (JIT, cache or artifact) ----===//

#include "ds/tools/ds-run/Compiled.h"

#include "ds/codegen/Compiler.h"
#include "ds/interpreter/Partitioned.h"
#include "ds/passes/Pipelines/Pipelines.h"
#include "ds/rt/Device.h"
#include "ds/rt/ThreadPool.h"
#include "ds/tools/ds-run/Serve.h"

#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FormatVariadic.h"

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>

using namespace mlir;

namespace ds::run {

namespace {

/// The kernel workers of compiled runs (--kernel-threads), or null for none.
std::unique_ptr<rt::ThreadPool> makeWorkers(const RunOptions &opts) {
  int n = opts.kernelThreads >= 0
              ? opts.kernelThreads
              : static_cast<int>(std::thread::hardware_concurrency()) - 1;
  if (n <= 0)
    return nullptr;
  return std::make_unique<rt::ThreadPool>(static_cast<unsigned>(n));
}

/// The interpreter's side of --check for one sequence: its own KV caches
/// ([1, L, ...]) and a decoder choosing tokens from its logits.
struct Reference {
  std::vector<HostTensor> caches;
  std::unique_ptr<rt::SequenceDecoder> decoder;
};

} // namespace

std::shared_ptr<const rt::Model> loadCompiled(const RunOptions &opts,
                                              ModuleOp module,
                                              const ds::Checkpoint *weights) {
  StringRef backend = opts.backend;
  if (backend == "jit") {
    if (!weights) {
      fail("--backend jit needs --weights");
      return nullptr;
    }
    // The default pipeline on a copy: an imported module needs it, and an
    // optimized one is a fixed point of it.
    OwningOpRef<ModuleOp> optimized = module.clone();
    ds::OptimizeOptions defaults;
    PassManager pm(module.getContext());
    if (failed(ds::buildOptimizePipeline(
            pm, defaults,
            [&](const Twine &msg) { return module.emitError(msg); })) ||
        failed(pm.run(*optimized)))
      return nullptr;
    // Under mpirun, this rank's process of a partitioned model.
    int64_t process = 0;
    if (rt::Communicator *comm = rt::processCommunicator().get())
      process = comm->rank();
    auto jit = ds::jitModule(*optimized, *weights, process);
    if (failed(jit))
      return nullptr;
    return *jit;
  }
  if (backend == "cached") {
    auto start = std::chrono::steady_clock::now();
    ds::CacheOutcome outcome;
    ds::CompileOptions options;
    auto compiled =
        ds::compileCached(opts.inputFile, opts.weightsDir, options, &outcome);
    if (!compiled.ok()) {
      fail(std::string(compiled.status().message()));
      return nullptr;
    }
    llvm::outs() << llvm::formatv("compile cache: {0} ({1:f1} ms)\n",
                                  ds::cacheOutcomeName(outcome),
                                  std::chrono::duration<double, std::milli>(
                                      std::chrono::steady_clock::now() - start)
                                      .count());
    return *compiled;
  }
  if (backend.starts_with("artifact=")) {
    // Under mpirun, "{process}" in the name is this rank's number: each
    // rank loads its process's artifact (ds-compile --process).
    std::string path = backend.drop_front(9).str();
    if (rt::Communicator *comm = rt::processCommunicator().get())
      for (size_t at; (at = path.find("{process}")) != std::string::npos;)
        path.replace(at, 9, std::to_string(comm->rank()));
    auto loaded = rt::Model::load(path);
    if (!loaded.ok()) {
      fail(std::string(loaded.status().message()));
      return nullptr;
    }
    return *loaded;
  }
  fail("--backend must be interpreter, jit, cached or artifact=FILE");
  return nullptr;
}

namespace {

/// The generated tokens and finish reasons of every replica's block of the
/// sequences, gathered from all ranks (data parallelism): each rank hands
/// in its block, one row of `2 + maxNew` floats per sequence (count,
/// reason, tokens; ids below 2^24 are exact), and the block of replica d is
/// taken from the first rank of replica d.
absl::Status gatherReplicas(rt::Communicator &comm, const rt::ModelPlan &plan,
                            int64_t maxNew,
                            std::vector<std::vector<int64_t>> &tokens,
                            std::vector<rt::FinishReason> &reasons) {
  const int64_t local = static_cast<int64_t>(tokens.size());
  const int64_t width = 2 + maxNew;
  std::vector<float> mine(local * width, 0.0f);
  for (int64_t i = 0; i < local; ++i) {
    float *row = &mine[i * width];
    if (static_cast<int64_t>(tokens[i].size()) > maxNew)
      return absl::InternalError("more tokens than --generate asked for");
    row[0] = static_cast<float>(tokens[i].size());
    row[1] = static_cast<float>(static_cast<int>(reasons[i]));
    for (size_t t = 0; t < tokens[i].size(); ++t) {
      if (tokens[i][t] < 0 || tokens[i][t] >= (int64_t{1} << 24))
        return absl::InternalError("a token id does not fit a float");
      row[2 + t] = static_cast<float>(tokens[i][t]);
    }
  }
  std::vector<float> all(static_cast<size_t>(comm.size()) * mine.size());
  if (absl::Status s = comm.allGather(
          mine.data(), static_cast<int64_t>(mine.size()), all.data());
      !s.ok())
    return s;
  const int64_t replicas = rt::gridGroupOf(plan.grid, plan.batchAxes, 0).size;
  tokens.assign(replicas * local, {});
  reasons.assign(replicas * local, rt::FinishReason::kLength);
  std::vector<bool> taken(replicas, false);
  for (int64_t r = 0; r < comm.size(); ++r) {
    int64_t d = rt::gridGroupOf(plan.grid, plan.batchAxes, r).index;
    if (taken[d])
      continue;
    taken[d] = true;
    for (int64_t i = 0; i < local; ++i) {
      const float *row = &all[(r * local + i) * width];
      std::vector<int64_t> &out = tokens[d * local + i];
      for (int64_t t = 0; t < static_cast<int64_t>(row[0]); ++t)
        out.push_back(static_cast<int64_t>(row[2 + t]));
      reasons[d * local + i] =
          static_cast<rt::FinishReason>(static_cast<int>(row[1]));
    }
  }
  return absl::OkStatus();
}

/// `t` repeated `n` times along its first axis.
HostTensor tileBatch(const HostTensor &t, int64_t n) {
  if (n == 1)
    return t;
  std::vector<int64_t> shape = t.shape;
  shape[0] *= n;
  HostTensor out(t.dtype, shape);
  const size_t bytes = t.bytes.size();
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out.data<uint8_t>() + i * bytes, t.data<uint8_t>(), bytes);
  return out;
}

} // namespace

int runGenerateCompiled(const RunOptions &opts,
                        std::shared_ptr<const rt::Model> model, ModuleOp module,
                        ds::Interpreter *interp) {
  std::vector<std::vector<int64_t>> allSeqs;
  if (std::optional<std::string> error = parsePrompts(opts, allSeqs))
    return fail(*error);
  const rt::ModelPlan &plan = model->plan();
  rt::Communicator *comm = rt::processCommunicator().get();
  // Data parallelism: this process runs its replica's block of the
  // sequences; the interpreter of --check, which runs every replica, is
  // given each sequence once per replica.
  rt::GridGroup replica;
  if (!plan.batchAxes.empty()) {
    // A replica may have no collective step to refuse a missing
    // communicator: refused here rather than run on the wrong rows.
    if (!comm || comm->size() != plan.processes)
      return fail(llvm::formatv(
          "a data-parallel plan for {0} processes, but this process is not "
          "one of {0} ranks (launch one process per rank with mpirun, from "
          "a ds built with MPI: libds_runtime_mpi)",
          plan.processes));
    replica = rt::gridGroupOf(plan.grid, plan.batchAxes, plan.process);
    if (static_cast<int64_t>(allSeqs.size()) % replica.size != 0)
      return fail(llvm::formatv("{0} prompts do not split over the {1} "
                                "data-parallel replicas",
                                allSeqs.size(), replica.size));
  }
  const int64_t perReplica =
      static_cast<int64_t>(allSeqs.size()) / replica.size;
  std::vector<std::vector<int64_t>> seqs(
      allSeqs.begin() + replica.index * perReplica,
      allSeqs.begin() + (replica.index + 1) * perReplica);
  int64_t b = seqs.size();
  auto cache = rt::KVCache::create(model->plan(), b);
  if (!cache.ok())
    return fail(std::string(cache.status().message()));
  std::unique_ptr<rt::ThreadPool> workers = makeWorkers(opts);
  rt::Executor exec(model, workers.get());
  exec.setMicroBatches(opts.microBatches);
  int64_t vocab = model->plan().vocabSize;
  rt::GenerationOptions options = opts.generation;
  options.maxNewTokens = opts.generate;
  const std::vector<int64_t> &eos = model->plan().eosTokenIds;
  std::vector<std::unique_ptr<rt::SequenceDecoder>> decoders;
  std::vector<Reference> refs(b);
  for (int64_t i = 0; i < b; ++i) {
    decoders.push_back(std::make_unique<rt::SequenceDecoder>(
        seqs[i], options, nullptr, eos, vocab));
    if (interp)
      refs[i].decoder = std::make_unique<rt::SequenceDecoder>(
          seqs[i], options, nullptr, eos, vocab);
  }
  // Under mpirun: the time this rank spends in collectives against the
  // whole generation (the interpreter's share too when --check).
  rt::CommunicatorStats before = comm ? comm->stats() : rt::CommunicatorStats();
  auto generationStart = std::chrono::steady_clock::now();
  double worst = 0;
  int64_t compared = 0, tokensCompared = 0;
  // Runs the interpreter on what the compiled code just ran for sequence
  // `seq`, compares the logits, and has the reference decoder choose its
  // token from them (checked against the compiled choice by the caller).
  auto checkAgainst = [&](const std::string &fn, int64_t seq,
                          const HostTensor &tokens, const HostTensor &pos,
                          const HostTensor &logits) -> bool {
    std::vector<HostTensor> args{tileBatch(tokens, replica.size),
                                 tileBatch(pos, replica.size)};
    if (refs[seq].caches.empty()) {
      auto f = module.lookupSymbol<func::FuncOp>(fn);
      for (unsigned i = 2; i < f.getNumArguments(); ++i) {
        // Whole caches, also for a partitioned module.
        RankedTensorType type = ds::wholeArgumentType(f, i);
        std::vector<int64_t> shape(type.getShape());
        shape[0] = replica.size;
        refs[seq].caches.push_back(HostTensor(DType::F32, shape));
      }
    }
    for (HostTensor &c : refs[seq].caches)
      args.push_back(std::move(c));
    FailureOr<std::vector<HostTensor>> out = interp->run(fn, args);
    if (failed(out))
      return false;
    refs[seq].caches.assign(std::make_move_iterator(out->begin() + 1),
                            std::make_move_iterator(out->end()));
    HostTensor ref = (*out)[0];
    if (replica.size > 1) {
      // Every replica ran the sequence: the first one's rows.
      std::vector<int64_t> shape = ref.shape;
      shape[0] = 1;
      HostTensor first(ref.dtype, shape);
      std::memcpy(first.data<uint8_t>(), ref.data<uint8_t>(),
                  first.bytes.size());
      ref = std::move(first);
    }
    int64_t v = ref.shape.back();
    if (logits.shape.size() == 2 && ref.shape.size() == 3 &&
        logits.shape[0] == 1 && ref.shape[0] == 1 && logits.shape[1] == v) {
      // Only the last position's logits were computed: compare that row.
      int64_t s = ref.shape[1];
      ref = HostTensor::fromFloats(
          {1, v}, std::vector<float>(ref.data<float>() + (s - 1) * v,
                                     ref.data<float>() + s * v));
    }
    if (ref.shape != logits.shape) {
      fail(fn + " logits are " + logits.shapeString() + ", the interpreter's " +
           ref.shapeString());
      return false;
    }
    worst = std::max(worst, relativeError(logits, ref));
    ++compared;
    // The interpreter's choice from its last row.
    refs[seq].decoder->advance(ref.data<float>() + ref.numElements() - v);
    return true;
  };
  // After both sides chose: the same token, or the same stop.
  auto sameChoice = [&](int64_t seq) -> bool {
    const rt::GenerationResult &a = decoders[seq]->result(),
                               &r = refs[seq].decoder->result();
    ++tokensCompared;
    if (a.tokens == r.tokens && a.stopToken == r.stopToken)
      return true;
    fail(llvm::formatv(
        "sequence {0}, token {1}: the compiled code chose {2}, "
        "the interpreter {3}",
        seq, a.completionTokens - 1,
        a.tokens.empty() || a.stopToken >= 0 ? a.stopToken : a.tokens.back(),
        r.tokens.empty() || r.stopToken >= 0 ? r.stopToken : r.tokens.back()));
    return false;
  };
  for (int64_t i = 0; i < b; ++i) {
    int64_t len = seqs[i].size();
    std::vector<int64_t> pos(len);
    std::iota(pos.begin(), pos.end(), 0);
    HostTensor tokens = HostTensor::fromInts({1, len}, seqs[i]);
    HostTensor positions = HostTensor::fromInts({1, len}, pos);
    // The last position's logits only, unless all were asked for.
    std::vector<int64_t> last{len - 1};
    auto out = exec.run("prefill", {&tokens, &positions}, &*cache, {i},
                        opts.allLogits ? nullptr : &last);
    if (!out.ok())
      return fail(std::string(out.status().message()));
    const HostTensor &logits = (*out)[0];
    vocab = logits.shape.back();
    decoders[i]->advance(logits.data<float>() +
                         (opts.allLogits ? len - 1 : 0) * vocab);
    if (interp && (!checkAgainst("prefill", i, tokens, positions, logits) ||
                   !sameChoice(i)))
      return 1;
  }
  for (;;) {
    // One decode step over the sequences still running, in their slots.
    std::vector<int64_t> tok, pos, slots;
    for (int64_t i = 0; i < b; ++i)
      if (!decoders[i]->finished()) {
        tok.push_back(decoders[i]->nextToken());
        pos.push_back(decoders[i]->nextPosition());
        slots.push_back(i);
      }
    if (replica.size > 1) {
      // The replicas step together (an all-to-all of the experts joins
      // them): until every replica is done, one that is done steps a
      // placeholder row (slot 0, position 0: its sequence has finished)
      // whose logits nobody reads.
      float running = static_cast<float>(slots.size());
      if (absl::Status st = comm->allReduceSum(&running, 1); !st.ok())
        return fail("counting the replicas' running sequences: " +
                    std::string(st.message()));
      if (running == 0)
        break;
      if (slots.empty()) {
        HostTensor tokens = HostTensor::fromInts({1, 1}, {0});
        HostTensor positions = HostTensor::fromInts({1, 1}, {0});
        auto out = exec.run("decode", {&tokens, &positions}, &*cache, {0});
        if (!out.ok())
          return fail(std::string(out.status().message()));
        continue;
      }
    }
    if (slots.empty())
      break;
    int64_t n = slots.size();
    HostTensor tokens = HostTensor::fromInts({n, 1}, tok);
    HostTensor positions = HostTensor::fromInts({n, 1}, pos);
    auto out = exec.run("decode", {&tokens, &positions}, &*cache, slots);
    if (!out.ok())
      return fail(std::string(out.status().message()));
    const HostTensor &logits = (*out)[0];
    for (int64_t r = 0; r < n; ++r) {
      int64_t i = slots[r];
      const float *row = logits.data<float>() + r * vocab;
      decoders[i]->advance(row);
      if (interp) {
        HostTensor rowT = HostTensor::fromFloats(
            {1, 1, vocab}, std::vector<float>(row, row + vocab));
        HostTensor t1 = HostTensor::fromInts({1, 1}, {tok[r]});
        HostTensor p1 = HostTensor::fromInts({1, 1}, {pos[r]});
        if (!checkAgainst("decode", i, t1, p1, rowT) || !sameChoice(i))
          return 1;
      }
    }
  }
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - generationStart)
                          .count();
  const rt::CommunicatorStats after = comm ? comm->stats() : before;
  std::vector<std::vector<int64_t>> generatedIds;
  std::vector<rt::FinishReason> reasons;
  for (int64_t i = 0; i < b; ++i) {
    generatedIds.push_back(decoders[i]->result().tokens);
    reasons.push_back(decoders[i]->result().finishReason);
  }
  if (replica.size > 1)
    if (absl::Status s =
            gatherReplicas(*comm, plan, opts.generate, generatedIds, reasons);
        !s.ok())
      return fail("gathering the replicas' sequences: " +
                  std::string(s.message()));
  printSequences(allSeqs, generatedIds, reasons, opts.tokenizer.get());
  if (comm && model->plan().processes > 1) {
    double in = after.seconds - before.seconds;
    llvm::outs() << llvm::formatv(
        "mpi: rank {0} of {1}: {2} collectives, {3:f1} KiB handed in, "
        "{4:f2} ms in them of {5:f2} ms generating ({6:f1}%{7})\n",
        comm->rank(), comm->size(), after.calls - before.calls,
        (after.bytesSent - before.bytesSent) / 1024.0, in * 1e3, wall * 1e3,
        wall > 0 ? 100 * in / wall : 0.0,
        interp ? "; --check's interpreter runs included" : "");
  }
  if (interp) {
    llvm::outs() << llvm::formatv(
        "check: {0} logits tensors against the interpreter, max relative "
        "error {1:e2} (tolerance {2:e1}); {3} tokens chosen alike\n",
        compared, worst, opts.checkTolerance, tokensCompared);
    if (!(worst <= opts.checkTolerance))
      return fail("compiled code differs from the interpreter by more than "
                  "the tolerance");
  }
  if (opts.serve > 0) {
    if (model->plan().processes == 1)
      return serveRequests(opts, model, allSeqs, generatedIds,
                           interp != nullptr);
    // A partitioned model: requests enter on rank 0, whose batcher hands
    // each step to the other ranks (they run it in lockstep); with data
    // parallelism each replica runs the rows in its slots, and the batcher
    // spreads the requests over the replicas' slots.
    if (comm->rank() != 0)
      return followSteps(opts, model, *comm);
    return serveRequests(opts, model, allSeqs, generatedIds, interp != nullptr,
                         comm);
  }
  return 0;
}

/// One function on compiled code, on the same arguments runOnce builds
/// (files, then seeded random values; cache arguments become the initial
/// contents of KV cache slots 0..B-1); with `interp`, compared result by
/// result (caches included) with the interpreter.
int runOnceCompiled(const RunOptions &opts,
                    std::shared_ptr<const rt::Model> model, ModuleOp module,
                    ds::Interpreter *interp) {
  const std::string &function = opts.function;
  auto fn = module.lookupSymbol<func::FuncOp>(function);
  const rt::FunctionPlan *plan = model->plan().find(function);
  if (!fn || !plan)
    return fail("no function @" + function);
  if (model->plan().pipelineAxis >= 0)
    return fail("a pipeline stage's plan runs with --generate (a single "
                "function's whole arguments and results are not a stage's)");
  std::vector<HostTensor> args;
  if (std::optional<std::string> error = buildArguments(opts, fn, args))
    return fail(*error);
  // Arguments the plan takes as inputs; the others are caches, in order.
  std::vector<const HostTensor *> ptrs;
  std::vector<const HostTensor *> cacheArgs;
  for (unsigned i = 0; i < args.size(); ++i) {
    bool isInput = llvm::any_of(plan->inputs, [&](int32_t v) {
      return plan->values[v].index == static_cast<int32_t>(i);
    });
    (isInput ? ptrs : cacheArgs).push_back(&args[i]);
  }
  std::optional<rt::KVCache> cache;
  std::vector<int64_t> slots;
  if (cacheArgs.size() != model->plan().caches.size() && !cacheArgs.empty())
    return fail("@" + function + " takes " + Twine(cacheArgs.size()) +
                " cache arguments; the plan has " +
                Twine(model->plan().caches.size()) + " caches");
  if (!cacheArgs.empty()) {
    int64_t b = cacheArgs[0]->shape[0];
    auto c = rt::KVCache::create(model->plan(), std::max<int64_t>(b, 1));
    if (!c.ok())
      return fail(std::string(c.status().message()));
    cache = std::move(*c);
    for (size_t i = 0; i < cacheArgs.size(); ++i) {
      const HostTensor &t = *cacheArgs[i];
      if (t.dtype != DType::F32 || t.shape[0] != b ||
          t.numElements() != b * cache->slotSize(i))
        return fail("cache argument " + Twine(i) +
                    " does not fit the model's "
                    "cache " +
                    Twine(i));
      cache->storeFloats(static_cast<int32_t>(i), 0, t.data<float>(),
                         t.numElements());
    }
    for (int64_t i = 0; i < b; ++i)
      slots.push_back(i);
  }
  std::unique_ptr<rt::ThreadPool> workers = makeWorkers(opts);
  rt::Executor exec(model, workers.get());
  auto results = exec.run(function, ptrs, cache ? &*cache : nullptr, slots);
  if (!results.ok())
    return fail(std::string(results.status().message()));
  // Every result of the function: outputs, and caches read back.
  std::vector<HostTensor> all;
  size_t nextOutput = 0;
  for (int32_t o : plan->outputs) {
    int32_t base = o;
    while (plan->values[base].kind == rt::ValueInfo::Kind::Alias)
      base = plan->values[base].index;
    if (plan->values[base].kind == rt::ValueInfo::Kind::Cache) {
      int32_t c = plan->values[base].index;
      const HostTensor &shapeFrom = *cacheArgs[c];
      HostTensor t(DType::F32, shapeFrom.shape);
      cache->loadFloats(c, 0, t.numElements(), t.data<float>());
      all.push_back(std::move(t));
    } else {
      all.push_back(std::move((*results)[nextOutput++]));
    }
  }
  double worst = 0;
  if (interp) {
    FailureOr<std::vector<HostTensor>> expected = interp->run(function, args);
    if (failed(expected))
      return 1;
    if (expected->size() != all.size())
      return fail("result counts differ");
    for (size_t i = 0; i < all.size(); ++i) {
      const HostTensor &a = all[i], &b = (*expected)[i];
      if (a.shape != b.shape)
        return fail("result " + Twine(i) + " is " + a.shapeString() +
                    ", the interpreter's " + b.shapeString());
      if (a.dtype == DType::F32)
        worst = std::max(worst, relativeError(a, b));
      else if (a.toInts() != b.toInts())
        return fail("integer result " + Twine(i) + " differs");
    }
  }
  for (auto [i, r] : llvm::enumerate(all)) {
    std::vector<float> v = r.toFloats();
    double sum = 0;
    for (float x : v)
      sum += x;
    llvm::outs() << "result " << i << ": " << r.shapeString()
                 << " sum=" << llvm::format("%.6g", sum) << "\n";
  }
  if (interp) {
    llvm::outs() << llvm::formatv(
        "check: {0} results against the interpreter, max relative error "
        "{1:e2} (tolerance {2:e1})\n",
        all.size(), worst, opts.checkTolerance);
    if (!(worst <= opts.checkTolerance))
      return fail("compiled code differs from the interpreter by more than "
                  "the tolerance");
  }
  return 0;
}

} // namespace ds::run
