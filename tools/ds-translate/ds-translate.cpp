//===- ds-translate.cpp - import models into ds IR ------------------------===//
//
//   ds-translate --import-hf DIR [--max-cache-len N] [--dtype f32|bf16|f16]
//                [--progress] [-o FILE]
//
// Reads a Hugging Face model directory (config.json + safetensors) and prints
// the ds module. Nothing is written when the import fails.
//
//===----------------------------------------------------------------------===//

#include "frontends/HF/Importer.h"

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
  cl::opt<bool> progress("progress", cl::desc("Print a line per layer"),
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
  mlir::ds::hf::ImportOptions options;
  options.maxCacheLen = maxCacheLen;
  options.dtype = dtype;
  // Progress lines on request, and by default for checkpoints over 1 GiB.
  uint64_t checkpointBytes = 0;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(importHF, ec), end;
       it != end && !ec; it.increment(ec))
    if (StringRef(it->path()).ends_with(".safetensors"))
      if (llvm::ErrorOr<llvm::sys::fs::basic_file_status> st = it->status())
        checkpointBytes += st->getSize();
  if (progress || checkpointBytes > (uint64_t(1) << 30))
    options.progress = [](int64_t layer, int64_t total) {
      llvm::errs() << "ds-translate: layer " << layer + 1 << "/" << total
                   << "\n";
    };
  OwningOpRef<ModuleOp> module =
      mlir::ds::hf::importModelDirectory(context, importHF, options);
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
