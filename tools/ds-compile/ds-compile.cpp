//===- ds-compile.cpp - models to runtime artifacts -----------------------===//
//
//   ds-compile INPUT [--weights PATH] [--optimize "OPTIONS"] [--no-optimize]
//              [--max-cache-len N] -o OUT.dsa [--print-plan]
//
// INPUT is a Hugging Face model directory (imported first) or a .mlir file.
// The module goes through ds-optimize (with OPTIONS, e.g. "quantize=int8")
// unless --no-optimize, then becomes one artifact file: the execution plan,
// the generated kernels (a shared object) and the packed weights. The
// runtime runs it with no MLIR or LLVM present. Nothing is written when
// compilation fails.
//
//===----------------------------------------------------------------------===//

#include "ds/codegen/Compiler.h"
#include "ds/dialects/InitAllDialects.h"

#include "ds/tools/OutOfMemory.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/Timing.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

#include <chrono>
#include <cmath>

using namespace mlir;
namespace cl = llvm::cl;

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  static const ds::tools::OutOfMemoryMessage oom{
      "ds-compile", "the machine, or a limit on this process (ulimit -d / -v, "
                    "a cgroup), allows less than this step needs"};
  ds::tools::exitOnOutOfMemory(oom);
  cl::OptionCategory category("ds-compile options");
  cl::opt<std::string> input(cl::Positional, cl::desc("<model dir or .mlir>"),
                             cl::Required, cl::cat(category));
  cl::opt<std::string> weights(
      "weights",
      cl::desc("Checkpoint (default: the model directory or the "
               "module's ds.weight_files)"),
      cl::init(""), cl::cat(category));
  cl::opt<std::string> optimize(
      "optimize", cl::desc("ds-optimize options, e.g. \"quantize=int8\""),
      cl::init(""), cl::cat(category));
  cl::opt<bool> noOptimize("no-optimize",
                           cl::desc("Compile the module as it is"),
                           cl::init(false), cl::cat(category));
  cl::opt<int64_t> maxCacheLen("max-cache-len",
                               cl::desc("KV cache capacity for imports"),
                               cl::init(0), cl::cat(category));
  cl::opt<std::string> output("o", cl::desc("Artifact to write"),
                              cl::value_desc("file"), cl::Required,
                              cl::cat(category));
  cl::opt<int64_t> process(
      "process",
      cl::desc("For a partitioned module (ds-partition): the process whose "
               "plan and weight shards the artifact holds (one artifact per "
               "process; ds-run under mpirun loads rank r's)"),
      cl::init(0), cl::cat(category));
  cl::opt<bool> printPlan("print-plan", cl::desc("Print each function's steps"),
                          cl::init(false), cl::cat(category));
  cl::opt<bool> progress(
      "progress",
      cl::desc("Report progress even when stderr is not a terminal"),
      cl::init(false), cl::cat(category));
  // --mlir-timing (and --mlir-timing-display=list|tree): where the time
  // goes, import, each ds-optimize pass and each codegen phase.
  registerDefaultTimingManagerCLOptions();
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "ds-compile: models to runtime artifacts\n\n"
      "  --mlir-timing shows where the time goes (import, each ds-optimize "
      "pass, each codegen phase)\n");
  // The passes and codegen report through ds::Progress, which reads this.
  if (progress)
    setenv("DS_PROGRESS", "1", /*overwrite=*/1);

  DialectRegistry registry;
  ds::registerAllDialects(registry);
  MLIRContext context(registry);
  // Errors as file:line:col with the source line, as mlir-opt prints them.
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  auto start = std::chrono::steady_clock::now();
  DefaultTimingManager timingManager;
  applyDefaultTimingManagerCLOptions(timingManager);
  TimingScope timing = timingManager.getRootScope();
  ds::CompileOptions options;
  options.timing = &timing;
  options.optimize = optimize;
  options.noOptimize = noOptimize;
  options.maxCacheLen = maxCacheLen;
  auto loaded = ds::loadForCompile(context, input, weights, options);
  if (failed(loaded))
    return 1;
  auto artifact = ds::compileModule(*(*loaded)->module, *(*loaded)->checkpoint,
                                    &timing, process);
  if (failed(artifact))
    return 1;
  TimingScope writeTimer = timing.nest("write the artifact");
  absl::Status written = ds::rt::writeArtifact(
      output, artifact->plan, artifact->target, artifact->code,
      ds::rt::WeightsFile{artifact->weights.fd(), artifact->weights.size()});
  writeTimer.stop();
  if (!written.ok()) {
    llvm::WithColor::error(llvm::errs(), "ds-compile")
        << std::string(written.message()) << "\n";
    return 1;
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  size_t steps = 0, generated = 0;
  for (const auto &f : artifact->plan.functions)
    for (const auto &s : f.steps) {
      steps += s.op() != ds::rt::OpCode::Alias;
      generated += s.op() == ds::rt::OpCode::Elementwise ||
                   s.op() == ds::rt::OpCode::Generated;
    }
  llvm::outs() << "ds-compile: " << output << ": "
               << artifact->plan.functions.size() << " functions, " << steps
               << " kernel calls (" << generated << " generated), "
               << artifact->plan.weights.size() << " weights ("
               << artifact->weights.size() << " bytes), code "
               << artifact->code.size() << " bytes, for "
               << artifact->target.cpu << " (requires "
               << llvm::join(artifact->target.requiredIsa, " ") << "), in "
               << llvm::format("%.2f", seconds) << " s\n";
  if (printPlan) {
    for (const auto &f : artifact->plan.functions) {
      llvm::outs() << "function " << f.name << ":\n";
      for (const auto &s : f.steps)
        llvm::outs() << "  " << ds::rt::opName(s.op()) << " " << s.location
                     << (s.kernel.empty() ? "" : " -> " + s.kernel) << "\n";
    }
    llvm::outs() << "weights:\n";
    for (const auto &w : artifact->plan.weights) {
      llvm::outs() << "  " << w.name << ": "
                   << ds::rt::weightLayoutName(w.layout) << " [";
      llvm::interleave(w.shape, llvm::outs(), "x");
      llvm::outs() << "]";
      if (w.group)
        llvm::outs() << " group " << w.group;
      llvm::outs() << ", " << w.bytes << " bytes\n";
    }
    llvm::outs() << "caches:\n";
    for (const auto &c : artifact->plan.caches) {
      int64_t elems = 1;
      for (int64_t d : c.rowShape)
        elems *= d;
      llvm::outs() << "  " << c.name << ": " << ds::rt::elemTypeName(c.type)
                   << " [";
      llvm::interleave(c.rowShape, llvm::outs(), "x");
      llvm::outs() << "] per slot, " << elems * ds::rt::elemSize(c.type)
                   << " bytes";
      if (c.type == ds::rt::ElemType::F8E4M3)
        llvm::outs() << ", scale 2^" << std::ilogb(c.scale);
      llvm::outs() << "\n";
    }
  }
  return 0;
}
