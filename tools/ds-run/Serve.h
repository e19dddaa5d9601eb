//===- Serve.h - ds-run --serve: a burst of requests through the batcher --===//

#ifndef DS_TOOLS_DS_RUN_SERVE_H
#define DS_TOOLS_DS_RUN_SERVE_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/tools/ds-run/Options.h"

#include "ds/rt/Executor.h"

namespace ds::run {

using mlir::ModuleOp;

/// Submits opts.serve requests (the prompts, round robin) to a batcher at
/// once from one thread (callbacks, no thread per request), waits for all,
/// prints throughput and latency, and fails unless every answer equals
/// `expected` (the sequential generation of the same prompt).
int serveRequests(const RunOptions &opts,
                  std::shared_ptr<const rt::Model> model,
                  const std::vector<std::vector<int64_t>> &prompts,
                  const std::vector<std::vector<int64_t>> &expected,
                  bool interpreterChecked);

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_SERVE_H
