//===- ds-translate.cpp - import models into ds IR ------------------------===//
//
//   ds-translate --import-hf DIR [--max-cache-len N] [--dtype f32|bf16|f16]
//                [--progress] [-o FILE]
//
// Reads a Hugging Face model directory (config.json + safetensors) and prints
// the ds module. Nothing is written when the import fails.
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/Importer.h"
#include "ds/support/Progress.h"

#include "ds/tools/OutOfMemory.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace mlir;
namespace cl = llvm::cl;

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  static const ds::tools::OutOfMemoryMessage oom{
      "ds-translate", "the machine, or a limit on this process (ulimit -d / "
                      "-v, a cgroup), allows less than this step needs"};
  ds::tools::exitOnOutOfMemory(oom);
  cl::OptionCategory category("ds-translate options");
  cl::opt<std::string> importHF(
      "import-hf", cl::desc("Hugging Face model directory"),
      cl::value_desc("dir"), cl::Required, cl::cat(category));
  cl::opt<int64_t> maxCacheLen(
      "max-cache-len",
      cl::desc("KV cache capacity (default min(max_position_embeddings, "
               "4096))"),
      cl::init(0), cl::cat(category));
  cl::opt<std::string> dtype("dtype",
                             cl::desc("IR element type: f32, bf16 or f16"),
                             cl::init("f32"), cl::cat(category));
  cl::opt<bool> progress("progress",
                         cl::desc("Report progress even when stderr is not a "
                                  "terminal"),
                         cl::init(false), cl::cat(category));
  cl::opt<std::string> output("o", cl::desc("Output file"),
                              cl::value_desc("file"), cl::init("-"),
                              cl::cat(category));
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv, "ds-translate: Hugging Face checkpoints to ds IR\n");

  MLIRContext context;
  // "model.layers.3: error: ..." for the importer's named locations.
  ScopedDiagnosticHandler handler(&context, [](Diagnostic &diag) {
    auto print = [](Diagnostic &d) {
      Location loc = d.getLocation();
      if (auto name = dyn_cast<NameLoc>(loc))
        llvm::errs() << name.getName().getValue() << ": ";
      else if (auto file = dyn_cast<FileLineColLoc>(loc))
        llvm::errs() << file.getFilename().getValue() << ": ";
      switch (d.getSeverity()) {
      case DiagnosticSeverity::Error:
        llvm::errs() << "error: ";
        break;
      case DiagnosticSeverity::Warning:
        llvm::errs() << "warning: ";
        break;
      case DiagnosticSeverity::Note:
        llvm::errs() << "note: ";
        break;
      case DiagnosticSeverity::Remark:
        llvm::errs() << "remark: ";
        break;
      }
      llvm::errs() << d.str() << "\n";
    };
    print(diag);
    for (Diagnostic &note : diag.getNotes())
      print(note);
    return success();
  });
  ds::hf::ImportOptions options;
  options.maxCacheLen = maxCacheLen;
  options.dtype = dtype;
  // Progress on a terminal (or with --progress / DS_PROGRESS=1).
  std::unique_ptr<ds::Progress> layers;
  if (ds::progressEnabled(progress))
    options.progress = [&](int64_t layer, int64_t total) {
      if (!layers)
        layers = std::make_unique<ds::Progress>("ds-translate: layers", total,
                                                progress);
      layers->advance();
      (void)layer;
    };
  OwningOpRef<ModuleOp> module =
      ds::hf::importModelDirectory(context, importHF, options);
  layers.reset(); // its last line now, before any error or output
  if (!module)
    return 1;
  std::string error;
  std::unique_ptr<llvm::ToolOutputFile> out = openOutputFile(output, &error);
  if (!out) {
    llvm::WithColor::error() << error << "\n";
    return 1;
  }
  module->print(out->os());
  out->os() << "\n";
  out->keep();
  return 0;
}
