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
  if (!options.pruneProfile.empty()) {
    PruneExpertsPassOptions prune;
    prune.profilePath = options.pruneProfile;
    prune.minCount = options.pruneMinCount;
    prune.keepTop = options.pruneKeepTop;
    pm.addPass(createPruneExpertsPass(prune));
  }
  bool fuse = options.level >= 2 && options.fusion;
  if (options.level >= 1) {
    pm.addPass(createDecomposeMoEPass());
    pm.addPass(createCanonicalizerPass());
  }
  if (fuse) {
    pm.addPass(createFuseRouterPass());
    pm.addPass(createFuseMoEPass());
    pm.addPass(createFuseHorizontalProjectionsPass());
    pm.addPass(createFuseLinearPass());
    pm.addPass(createCanonicalizerPass());
  }
  if (options.quantize != "none") {
    QuantizePassOptions quant;
    quant.scheme = options.quantize;
    quant.weightsPath = options.weights;
    quant.outputPath = options.quantizedWeights;
    quant.groupSize = options.groupSize;
    quant.zeroPoint = options.zeroPoint;
    quant.calibrationPath = options.calibration;
    quant.targets.assign(options.quantizeTargets.begin(),
                         options.quantizeTargets.end());
    quant.exclude.assign(options.quantizeExclude.begin(),
                         options.quantizeExclude.end());
    pm.addPass(createQuantizePass(quant));
    if (fuse)
      pm.addPass(createFuseLinearPass());
    pm.addPass(createCanonicalizerPass());
  }
  pm.addPass(createCSEPass());
}

void mlir::ds::registerDSPipelines() {
  PassPipelineRegistration<OptimizeOptions>(
      "ds-optimize",
      "The ds optimization pipeline: expert pruning, MoE decomposition, "
      "kernel fusion and quantization (see docs/generated/DSPasses.md)",
      buildOptimizePipeline);
}
