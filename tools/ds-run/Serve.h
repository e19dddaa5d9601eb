//===- Serve.h - ds-run --serve: a burst of requests through the batcher --===//

#ifndef DS_TOOLS_DS_RUN_SERVE_H
#define DS_TOOLS_DS_RUN_SERVE_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/tools/ds-run/Options.h"

#include "ds/rt/Device.h"
#include "ds/rt/Executor.h"

namespace ds::run {

using mlir::ModuleOp;

/// Submits opts.serve requests (the prompts, round robin) to a batcher at
/// once from one thread (callbacks, no thread per request), waits for all,
/// prints throughput and latency, and fails unless every answer equals
/// `expected` (the sequential generation of the same prompt). With
/// `lockstep` (a partitioned model, on its rank 0) the batcher leads the
/// other ranks, which run followSteps.
int serveRequests(const RunOptions &opts,
                  std::shared_ptr<const rt::Model> model,
                  const std::vector<std::vector<int64_t>> &prompts,
                  const std::vector<std::vector<int64_t>> &expected,
                  bool interpreterChecked,
                  rt::Communicator *lockstep = nullptr);
/// The other ranks of a partitioned model while rank 0 serves: a session
/// like the batcher's, running the steps rank 0 hands out until it stops.
int followSteps(const RunOptions &opts, std::shared_ptr<const rt::Model> model,
                rt::Communicator &comm);

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_SERVE_H
