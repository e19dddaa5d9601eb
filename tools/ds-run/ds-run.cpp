//===- ds-run.cpp - run ds modules: interpreted, compiled, served ---------===//
//
//   ds-run FILE.mlir [--weights DIR] [--function NAME] [--input X.npy]...
//          [--seed N] [--dyn-size K] [--int-max M] [--output-dir DIR]
//     Runs one function. Arguments come from .npy files in order; the rest
//     are generated from the seed (dynamic dims = K, floats ~ N(0, 1),
//     integers uniform in [0, M)). Results go to DIR/result<i>.npy, or are
//     summarized on stdout.
//
//   ds-run FILE.mlir --weights DIR --generate N --prompt 1,2,3 [--prompt ...]
//          [--dump-dir DIR] [--temperature T --top-k K --top-p P --min-p M
//          --repetition-penalty R --seed S] [--stop ID,ID] [--ignore-eos]
//     Generation with an imported model: @prefill on the prompts (one
//     sequence each, equal lengths), then @decode one token at a time with
//     the KV caches; greedy unless --temperature > 0, sampled exactly as the
//     runtime samples (seed --seed), ending at N tokens, a --stop token or
//     the model's EOS. Prints the generated tokens; --dump-dir writes
//     prefill_logits.npy [B, S, V], decode_logits.npy [steps-1, B, V] and
//     tokens.npy [B, S+steps] (-1 after a sequence's stop).
//
//   --calibrate FILE.json   records the absolute maximum of every GEMM input
//     (by weight name) and of the rows written into each KV cache over the
//     run: static activation scales for ds-quantize calibration=FILE.json,
//     e4m3 cache scales for ds-kv-cache-type calibration=FILE.json.
//   --reference REF.mlir [--report FILE.json]   runs REF (e.g. the module
//     before ds-quantize) in lockstep on the same inputs (the same tokens
//     when generating) and reports the relative L2 error of the outputs and
//     of each layer's hidden state (ops located at "model.layers.N").
//
//   --backend jit | cached | artifact=FILE.dsa   runs the model on the
//     compiled CPU code instead of the interpreter: `jit` compiles FILE.mlir
//     in process (ORC), `cached` through the on-disk compile cache (both run
//     the default ds-optimize pipeline first, so an imported module runs
//     as is), `artifact=` loads a ds-compile artifact. With --generate the
//     prompts may differ in length (each sequence gets its own KV cache
//     slot); prefill computes the logits of each prompt's last position
//     only (--all-logits: every position), on --kernel-threads workers
//     (default: every core). --check runs the interpreter on FILE.mlir in
//     lockstep and fails when any logits differ by more than --check-tolerance
//     (relative to the largest reference logit) or when a token chosen from the
//     interpreter's logits differs from the compiled code's.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/ThreadScratch.h"
#ifdef DS_HAVE_MPI
#include "ds/rt/MpiCommunicator.h"
#endif
#include "ds/passes/Passes.h"
#include "ds/tools/OutOfMemory.h"
#include "ds/tools/ds-run/Compiled.h"
#include "ds/tools/ds-run/Interpreted.h"

#include "ds/dialects/InitAllDialects.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"

#include <fcntl.h>
#include <unistd.h>

using namespace mlir;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory category("ds-run options");

cl::opt<std::string> inputFile(cl::Positional, cl::desc("<module.mlir>"),
                               cl::Required, cl::cat(category));
cl::opt<std::string> weightsDir("weights",
                                cl::desc("Checkpoint directory or file"),
                                cl::cat(category));
cl::opt<bool> streamWeights(
    "stream-weights",
    cl::desc("Interpreter: read each weight from the checkpoint when an op "
             "needs it instead of keeping every weight converted to f32 "
             "(slower; for checkpoints whose f32 weights do not fit in "
             "memory, which turns it on by itself when they exceed half of "
             "it)"),
    cl::init(false), cl::cat(category));
cl::opt<std::string> function("function", cl::desc("Function to run"),
                              cl::init("main"), cl::cat(category));
cl::list<std::string> inputs(
    "input",
    cl::desc("Argument from a .npy file or FILE.safetensors:TENSOR_NAME"),
    cl::cat(category));
cl::opt<uint64_t>
    seed("seed",
         cl::desc("Seed for generated arguments and for sampled generation"),
         cl::init(0), cl::cat(category));
cl::opt<int64_t> dynSize("dyn-size",
                         cl::desc("Size of dynamic dims of generated args"),
                         cl::init(2), cl::cat(category));
cl::opt<int64_t> intMax("int-max",
                        cl::desc("Generated integers are in [0, int-max)"),
                        cl::init(16), cl::cat(category));
cl::opt<std::string> outputDir("output-dir",
                               cl::desc("Write results as .npy files here"),
                               cl::cat(category));
cl::opt<int64_t> generate("generate",
                          cl::desc("Generate up to this many tokens (>= 1)"),
                          cl::init(0), cl::cat(category));
cl::list<std::string> prompts("prompt",
                              cl::desc("Comma-separated prompt token ids"),
                              cl::cat(category));
cl::list<std::string> promptTexts(
    "prompt-text",
    cl::desc("A prompt as text, encoded with the model's tokenizer (the "
             "generated tokens are then decoded too)"),
    cl::cat(category));
cl::opt<std::string> tokenizerPath(
    "tokenizer",
    cl::desc("tokenizer.json, or a directory holding it (default: the "
             "--weights directory, or the model directory given as input)"),
    cl::cat(category));
cl::opt<double> temperature("temperature",
                            cl::desc("With --generate: sample at this "
                                     "temperature (0: greedy)"),
                            cl::init(0), cl::cat(category));
cl::opt<int64_t> topK("top-k",
                      cl::desc("With --temperature: keep the k most likely"),
                      cl::init(0), cl::cat(category));
cl::opt<double> topP("top-p",
                     cl::desc("With --temperature: nucleus sampling mass"),
                     cl::init(1), cl::cat(category));
cl::opt<double> minP("min-p",
                     cl::desc("With --temperature: drop tokens below this "
                              "fraction of the most likely one"),
                     cl::init(0), cl::cat(category));
cl::opt<double> repetitionPenalty(
    "repetition-penalty",
    cl::desc("With --generate: penalty on tokens already seen (1: none)"),
    cl::init(1), cl::cat(category));
cl::opt<std::string> stop("stop",
                          cl::desc("With --generate: comma-separated token "
                                   "ids that end a sequence"),
                          cl::cat(category));
cl::opt<bool> ignoreEos("ignore-eos",
                        cl::desc("With --generate: do not stop at the "
                                 "model's EOS tokens"),
                        cl::init(false), cl::cat(category));
cl::opt<std::string> dumpDir("dump-dir",
                             cl::desc("With --generate: write logits here"),
                             cl::cat(category));
cl::opt<std::string>
    calibrate("calibrate",
              cl::desc("Write the absolute maximum of every GEMM input and KV "
                       "cache's rows (JSON)"),
              cl::cat(category));
cl::opt<std::string> referenceFile(
    "reference",
    cl::desc("Run this module (e.g. before quantization) on the same inputs "
             "and report the error against it"),
    cl::cat(category));
cl::opt<bool> forceRouting(
    "force-routing",
    cl::desc("With --reference: impose the reference's expert choices, so "
             "that the error measures rounding, not changed routing"),
    cl::init(false), cl::cat(category));
cl::opt<std::string> reportFile("report",
                                cl::desc("With --reference: write the error "
                                         "report here (JSON)"),
                                cl::cat(category));
cl::opt<std::string> partition(
    "partition",
    cl::desc("Partition the module first (ds-partition's options, e.g. "
             "\"tp=2\" or \"tp=2 ep=2\"): the interpreter runs every "
             "process; compiled backends run this rank's under mpirun"),
    cl::value_desc("options"), cl::cat(category));
cl::opt<std::string> backend("backend",
                             cl::desc("interpreter (default), jit, cached, or "
                                      "artifact=FILE.dsa"),
                             cl::init("interpreter"), cl::cat(category));
cl::opt<bool> check("check",
                    cl::desc("With --backend: compare with the interpreter"),
                    cl::init(false), cl::cat(category));
cl::opt<int> kernelThreads(
    "kernel-threads",
    cl::desc("With --backend: kernel worker threads besides the caller for "
             "prefill, decode and single runs (-1: one less than the cores)"),
    cl::init(-1), cl::cat(category));
cl::opt<bool> allLogits(
    "all-logits",
    cl::desc("With --backend and --generate: compute the logits of every "
             "prompt position (default: the last only, which is all "
             "generation needs; scoring needs all)"),
    cl::init(false), cl::cat(category));
cl::opt<int64_t> microBatches(
    "micro-batches",
    cl::desc("With --backend and a pipeline-parallel partition (pp): "
             "micro-batches each prefill and decode step is split into, so "
             "that the stages work at once (0: one per stage; every rank "
             "must use the same; the batcher of --serve uses one per stage)"),
    cl::init(0), cl::cat(category));
cl::opt<double> checkTolerance(
    "check-tolerance",
    cl::desc("Largest |compiled - interpreter| / max |interpreter| allowed"),
    cl::init(1e-4), cl::cat(category));
cl::opt<int64_t> serve(
    "serve",
    cl::desc("With --backend and --generate: then serve this many concurrent "
             "requests (the prompts, round robin) through the dynamic batcher "
             "and compare every answer with the sequential generation"),
    cl::init(0), cl::cat(category));
cl::opt<int64_t> maxBatch("max-batch", cl::desc("Batcher max_batch_size"),
                          cl::init(32), cl::cat(category));
cl::opt<int64_t> serveThreads(
    "serve-threads",
    cl::desc("With --serve: the batcher's kernel worker threads besides its "
             "scheduler (-1: one less than the cores)"),
    cl::init(-1), cl::cat(category));
cl::opt<std::string> profileRouting(
    "profile-routing",
    cl::desc("Count how often each MoE layer selects each expert over the "
             "whole run and write the profile as JSON"),
    cl::cat(category));

/// The command line as RunOptions; an error message when it is inconsistent.
std::optional<std::string> readOptions(ds::run::RunOptions &o) {
  o.inputFile = inputFile;
  o.weightsDir = weightsDir;
  o.function = function;
  o.inputs.assign(inputs.begin(), inputs.end());
  o.seed = seed;
  o.dynSize = dynSize;
  o.intMax = intMax;
  o.outputDir = outputDir;
  o.generate = generate;
  if (generate.getNumOccurrences() && generate < 1)
    return "--generate " + std::to_string(generate) +
           ": the number of tokens must be at least 1";
  o.prompts.assign(prompts.begin(), prompts.end());
  o.promptTexts.assign(promptTexts.begin(), promptTexts.end());
  if (!promptTexts.empty() || tokenizerPath.getNumOccurrences()) {
    // The tokenizer: named, or beside the weights / in the model directory.
    std::string path = tokenizerPath;
    for (const std::string &dir :
         {std::string(weightsDir), std::string(inputFile)})
      if (path.empty() && !dir.empty() &&
          llvm::sys::fs::exists(dir + "/tokenizer.json"))
        path = dir;
    if (path.empty())
      return std::string("--prompt-text needs a tokenizer: no tokenizer.json "
                         "beside the weights; name one with --tokenizer");
    absl::StatusOr<std::unique_ptr<ds::tok::Tokenizer>> tok =
        ds::tok::Tokenizer::fromFile(path);
    if (!tok.ok())
      return std::string(tok.status().message());
    o.tokenizer = std::move(*tok);
  }
  o.dumpDir = dumpDir;
  o.calibrate = calibrate;
  o.referenceFile = referenceFile;
  o.reportFile = reportFile;
  o.profileRouting = profileRouting;
  o.forceRouting = forceRouting;
  o.backend = backend;
  o.check = check;
  o.allLogits = allLogits;
  o.microBatches = microBatches;
  o.kernelThreads = kernelThreads;
  o.checkTolerance = checkTolerance;
  o.serve = serve;
  o.maxBatch = maxBatch;
  o.serveThreads = serveThreads;
  if (serve < 0)
    return std::string("--serve must not be negative");
  if (microBatches < 0)
    return std::string("--micro-batches must not be negative");
  ds::rt::GenerationOptions &g = o.generation;
  g.maxNewTokens = std::max<int64_t>(generate, 1);
  g.sampling.temperature = temperature;
  g.sampling.topK = topK;
  g.sampling.topP = topP;
  g.sampling.minP = minP;
  g.sampling.repetitionPenalty = repetitionPenalty;
  g.sampling.seed = seed;
  g.ignoreEos = ignoreEos;
  SmallVector<StringRef> parts;
  StringRef(stop).split(parts, ',', -1, false);
  for (StringRef part : parts) {
    int64_t id;
    if (part.trim().getAsInteger(10, id))
      return ("bad token id '" + part + "' in --stop").str();
    g.stopTokens.push_back(id);
  }
  if (absl::Status s = g.validate(); !s.ok())
    return std::string(s.message());
  return std::nullopt;
}

} // namespace

static int run(int argc, char **argv);

int main(int argc, char **argv) {
  int rc = run(argc, argv);
#ifdef DS_HAVE_MPI
  // A rank that fails ends the job: its peers may be waiting in a
  // collective that will never complete, which MPI_Finalize would wait
  // for too.
  if (rc != 0 && ds::rt::processCommunicator())
    ds::rt::mpiAbort(rc);
#endif
  return rc;
}

static int run(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  static const ds::tools::OutOfMemoryMessage oom{
      "ds-run", "the interpreter keeps every weight in f32 unless run with "
                "--stream-weights; the machine, or a limit on this process "
                "(ulimit -d / -v, a cgroup), allows less than this run needs"};
  ds::tools::exitOnOutOfMemory(oom);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv, "ds-run: run ds modules (interpreted, compiled, served)\n");
  using ds::run::fail;
  ds::run::RunOptions opts;
  if (std::optional<std::string> error = readOptions(opts))
    return fail(*error);
#ifdef DS_HAVE_MPI
  // Under mpirun each rank runs the plan of its process of a partitioned
  // model (rank r: process r), its collective steps over MPI; rank 0
  // prints, the others only report errors.
  if (ds::rt::launchedByMpi()) {
    auto comm = ds::rt::mpiWorldCommunicator();
    if (!comm.ok())
      return fail(std::string(comm.status().message()));
    ds::rt::setCommunicator(*comm);
    if ((*comm)->rank() != 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0)
        ::dup2(devnull, STDOUT_FILENO);
    }
  }
#endif
  DialectRegistry registry;
  ds::registerAllDialects(registry);
  MLIRContext context(registry);
  context.loadAllAvailableDialects();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> buffer = openInputFile(inputFile, &error);
  if (!buffer)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(buffer), SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;
  if (!partition.empty()) {
    // Commas separate options too: "tp=2,ep=2" reads as "tp=2 ep=2".
    std::string options = partition;
    std::replace(options.begin(), options.end(), ',', ' ');
    ds::registerPartitionPass();
    PassManager pm(&context, ModuleOp::getOperationName());
    if (failed(parsePassPipeline("ds-partition{" + options + "}", pm,
                                 llvm::errs())) ||
        failed(pm.run(*module)))
      return fail("--partition \"" + partition + "\" failed");
  }
  llvm::SourceMgr refSourceMgr;
  OwningOpRef<ModuleOp> refModule;
  if (!referenceFile.empty()) {
    std::unique_ptr<llvm::MemoryBuffer> refBuffer =
        openInputFile(referenceFile, &error);
    if (!refBuffer)
      return fail(error);
    refSourceMgr.AddNewSourceBuffer(std::move(refBuffer), SMLoc());
    refModule = parseSourceFile<ModuleOp>(refSourceMgr, &context);
    if (!refModule)
      return 1;
  } else if (!reportFile.empty() || forceRouting) {
    return fail(Twine(forceRouting ? "--force-routing" : "--report") +
                " needs --reference");
  }
  std::unique_ptr<ds::Checkpoint> checkpoint, refCheckpoint;
  std::unique_ptr<ds::CheckpointWeights> weights, refWeights;
  bool stream = streamWeights;
  if (!weightsDir.empty()) {
    FailureOr<std::unique_ptr<ds::Checkpoint>> c =
        ds::openModuleCheckpoint(*module, weightsDir, error);
    if (failed(c))
      return fail(error);
    checkpoint = std::move(*c);
    // The interpreter keeps each weight it has converted to f32, unless
    // that would not fit: a real-width checkpoint (Mixtral 8x7B's 47 B
    // parameters are 188 GB in f32) is then read weight by weight at each
    // use.
    uint64_t f32Bytes = 0;
    for (const auto &file : checkpoint->files())
      for (const ds::TensorView &t : file->tensors())
        f32Bytes += static_cast<uint64_t>(t.numElements()) * sizeof(float);
    const uint64_t memory = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                            static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    stream = stream || f32Bytes > memory / 2;
    if (stream && !streamWeights)
      llvm::errs() << "ds-run: the weights take " << (f32Bytes >> 20)
                   << " MB in f32, more than half of memory: each is read "
                      "from the checkpoint when used (--stream-weights)\n";
    auto caching = stream ? ds::CheckpointWeights::Caching::Stream
                          : ds::CheckpointWeights::Caching::Keep;
    weights = std::make_unique<ds::CheckpointWeights>(*checkpoint, caching);
    if (refModule) {
      c = ds::openModuleCheckpoint(*refModule, weightsDir, error);
      if (failed(c))
        return fail(error);
      refCheckpoint = std::move(*c);
      refWeights =
          std::make_unique<ds::CheckpointWeights>(*refCheckpoint, caching);
    }
  }
  ds::Interpreter interp(*module, weights.get());
  interp.setBoundedMemory(stream);
  if (backend != "interpreter") {
    std::shared_ptr<const ds::rt::Model> model =
        ds::run::loadCompiled(opts, *module, checkpoint.get());
    if (!model)
      return 1;
    if (check && !weights)
      return fail("--check needs --weights");
    int rc = generate <= 0
                 ? ds::run::runOnceCompiled(opts, model, *module,
                                            check ? &interp : nullptr)
                 : ds::run::runGenerateCompiled(opts, model, *module,
                                                check ? &interp : nullptr);
    // Every kernel's scratch is planned (ThreadScratch.h); a take outside
    // the plan is a runtime bug that --check must not let pass.
    if (uint64_t spilled = ds::rt::ThreadScratch::overflows(); check && spilled)
      return fail(llvm::Twine("kernels took ") + llvm::Twine(spilled) +
                  " scratch buffers outside the planned arena");
    return rc;
  }
  std::unique_ptr<ds::Interpreter> refInterp;
  ds::run::Report report;
  report.referenceFile = referenceFile;
  report.forceRouting = forceRouting;
  if (refModule) {
    refInterp = std::make_unique<ds::Interpreter>(*refModule, refWeights.get());
    refInterp->setBoundedMemory(stream);
    interp.setValueObserver(
        [&](Value v, const ds::Tensor &t) { report.mine.observe(v, t); });
    refInterp->setValueObserver(
        [&](Value v, const ds::Tensor &t) { report.ref.observe(v, t); });
    refInterp->setRoutingObserver(
        [&](Operation *op, const ds::Tensor &indices, int64_t) {
          report.recordReference(op, indices);
        });
    interp.setRoutingOverride([&](Operation *op) { return report.impose(op); });
  }
  ds::run::Calibration calibration;
  if (!calibrate.empty()) {
    interp.setGemmInputObserver(
        [&](Operation *, Value weight, const ds::Tensor &input) {
          calibration.record(weight, input);
        });
    // The rows written into the KV caches (beside the reference's
    // observer, when there is one).
    ds::ValueObserver previous = interp.getValueObserver();
    interp.setValueObserver([&, previous](Value v, const ds::Tensor &t) {
      if (previous)
        previous(v, t);
      calibration.recordCacheUpdate(v, t);
    });
  }
  ds::run::RoutingProfile profile;
  if (!profileRouting.empty() || refInterp)
    interp.setRoutingObserver(
        [&](Operation *op, const ds::Tensor &indices, int64_t experts) {
          if (!profileRouting.empty())
            profile.record(op, indices, experts);
          if (refInterp)
            report.compareRouting(op, indices);
        });
  int rc =
      generate > 0
          ? ds::run::runGenerate(opts, *module, interp, refInterp.get(), report)
          : ds::run::runOnce(opts, *module, interp, refInterp.get(), report);
  if (rc == 0 && refInterp) {
    report.print();
    if (!reportFile.empty())
      if (absl::Status s = report.write(reportFile); !s.ok())
        return fail(std::string(s.message()));
  }
  if (rc == 0 && !calibrate.empty())
    if (absl::Status s = calibration.write(calibrate); !s.ok())
      return fail(std::string(s.message()));
  if (rc == 0 && !profileRouting.empty())
    if (absl::Status s = profile.write(profileRouting); !s.ok())
      return fail(std::string(s.message()));
  return rc;
}
