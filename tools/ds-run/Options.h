//===- Options.h - ds-run's options and the helpers its modes share -------===//
//
// ds-run has four modes, one file each: interpreted runs (Interpreted.cpp,
// with the observers of Observers.h: error reports, calibration, routing
// profiles), compiled runs (Compiled.cpp), and the batcher load generator
// (Serve.cpp). ds-run.cpp parses the command line into RunOptions and picks
// the mode.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOOLS_DS_RUN_OPTIONS_H
#define DS_TOOLS_DS_RUN_OPTIONS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/rt/Generation.h"
#include "ds/support/HostTensor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/JSON.h"

#include "ds/tok/Tokenizer.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ds::run {

struct RunOptions {
  std::string inputFile, weightsDir, function = "main";
  std::vector<std::string> inputs;
  uint64_t seed = 0;
  int64_t dynSize = 2, intMax = 16;
  std::string outputDir;
  /// Tokens to generate (0: run one function instead).
  int64_t generate = 0;
  std::vector<std::string> prompts;
  /// Prompts as text (--prompt-text), encoded with `tokenizer`, which also
  /// decodes what is generated.
  std::vector<std::string> promptTexts;
  std::shared_ptr<const tok::Tokenizer> tokenizer;
  std::string dumpDir, calibrate, referenceFile, reportFile, profileRouting;
  bool forceRouting = false;
  std::string backend = "interpreter";
  bool check = false, allLogits = false;
  int kernelThreads = -1;
  double checkTolerance = 1e-4;
  int64_t serve = 0, maxBatch = 32, serveThreads = -1;
  /// A pipeline-parallel plan's micro-batches per step (0: one per stage).
  int64_t microBatches = 0;
  /// Sampling and stop conditions of --generate (greedy by default).
  rt::GenerationOptions generation;
};

/// Prints "ds-run: error: <message>" and returns 1.
int fail(const llvm::Twine &message);

/// Writes `value` as indented JSON through a temporary file.
absl::Status writeJson(const std::string &path, llvm::json::Value value);

/// The --prompt token lists, then the --prompt-text prompts encoded; an
/// error message when one is malformed.
std::optional<std::string>
parsePrompts(const RunOptions &opts, std::vector<std::vector<int64_t>> &seqs);

/// "sequence i: prompt [...] -> generated [...] (<finish reason>)" for each,
/// and with a tokenizer "text i: "<prompt>" -> "<generated>"" (JSON
/// strings).
void printSequences(const std::vector<std::vector<int64_t>> &prompts,
                    const std::vector<std::vector<int64_t>> &generated,
                    const std::vector<rt::FinishReason> &reasons,
                    const tok::Tokenizer *tokenizer = nullptr);

/// The arguments of `fn`: the --input files in order, then values generated
/// from --seed; an error message when they do not fit.
std::optional<std::string> buildArguments(const RunOptions &opts,
                                          mlir::func::FuncOp fn,
                                          std::vector<HostTensor> &args);

/// Max |a - b| / max |b| over two equal-shaped f32 tensors.
double relativeError(const HostTensor &a, const HostTensor &b);

/// The model's EOS ids, from the module's ds.model attribute.
std::vector<int64_t> moduleEosTokens(mlir::ModuleOp module);

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_OPTIONS_H
