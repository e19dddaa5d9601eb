//===- Pipelines.cpp - named ds pass pipelines ----------------------------===//
//
// The order matters: the router is fused before sibling projections are
// merged (or its gate projection would join the shared expert's), and the
// routed chain before ds-fuse-horizontal merges its gate/up (either form is
// matched, but fewer concats result).
//
//===----------------------------------------------------------------------===//

#include "passes/Pipelines/Pipelines.h"
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::ds;

void mlir::ds::buildOptimizePipeline(OpPassManager &pm,
                                     const OptimizeOptions &options) {
  pm.addPass(createDecomposeMoEPass());
  pm.addPass(createCanonicalizerPass());
  if (options.fusion) {
    pm.addPass(createFuseRouterPass());
    pm.addPass(createFuseMoEPass());
    pm.addPass(createFuseHorizontalProjectionsPass());
    pm.addPass(createFuseLinearPass());
    pm.addPass(createCanonicalizerPass());
  }
  pm.addPass(createCSEPass());
}

void mlir::ds::registerDSPipelines() {
  PassPipelineRegistration<OptimizeOptions>(
      "ds-optimize",
      "The ds optimization pipeline: MoE decomposition and kernel fusion "
      "(quantization and sparsity options arrive with those passes)",
      buildOptimizePipeline);
}
