//===- Pipelines.cpp - named ds pass pipelines ----------------------------===//
//
// The order matters: the router is fused before sibling projections are
// merged (or its gate projection would join the shared expert's), and the
// routed chain before ds-fuse-horizontal merges its gate/up (either form is
// matched, but fewer concats result).
//
//===----------------------------------------------------------------------===//

#include "ds/passes/Pipelines/Pipelines.h"
#include "ds/passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace ds;

LogicalResult ds::buildOptimizePipeline(
    OpPassManager &pm, const OptimizeOptions &options,
    function_ref<LogicalResult(const Twine &)> errorHandler) {
  auto fail = [&](const Twine &message) {
    return errorHandler ? errorHandler(message) : failure();
  };
  if (options.level < 0 || options.level > 2)
    return fail("ds-optimize: level must be 0, 1 or 2, got " +
                Twine(options.level.getValue()));
  if (options.sparsity != "none" && options.sparsity != "2:4")
    return fail("ds-optimize: sparsity must be none or 2:4, got '" +
                options.sparsity.getValue() + "'");
  const std::string &kv = options.kvCache;
  if (kv != "keep" && kv != "f32" && kv != "bf16" && kv != "f16" &&
      kv != "f8e4m3")
    return fail("ds-optimize: kv-cache must be keep, f32, bf16, f16 or "
                "f8e4m3, got '" +
                kv + "'");
  if (!options.kvCacheCalibration.empty() && kv != "f8e4m3")
    return fail("ds-optimize: kv-cache-calibration is for kv-cache=f8e4m3");
  if (!options.pruneProfile.empty()) {
    PruneExpertsPassOptions prune;
    prune.profilePath = options.pruneProfile;
    prune.minCount = options.pruneMinCount;
    prune.keepTop = options.pruneKeepTop;
    pm.addPass(createPruneExpertsPass(prune));
  }
  if (options.tp < 1 || options.ep < 1 || options.dp < 1 || options.pp < 1)
    return fail("ds-optimize: tp, ep, dp and pp must be at least 1, got " +
                Twine(options.tp.getValue()) + ", " +
                Twine(options.ep.getValue()) + ", " +
                Twine(options.dp.getValue()) + " and " +
                Twine(options.pp.getValue()));
  if (options.tp > 1 || options.ep > 1 || options.dp > 1 || options.pp > 1) {
    if (options.quantize != "none" || options.sparsity != "none")
      return fail("ds-optimize: tp, ep, dp or pp > 1 cannot be combined with "
                  "quantize or "
                  "sparsity yet (the weights of a partitioned module are "
                  "shards, which ds-quantize and ds-sparsify-24 do not "
                  "rewrite)");
    PartitionPassOptions partition;
    partition.tp = options.tp;
    partition.ep = options.ep;
    partition.dp = options.dp;
    partition.pp = options.pp;
    partition.moeAllToAll = options.moeAllToAll;
    pm.addPass(createPartitionPass(partition));
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
    pm.addPass(createFuseElementwisePass());
    pm.addPass(createCanonicalizerPass());
  }
  if (options.sparsity == "2:4") {
    Sparsify24PassOptions sparse;
    sparse.weightsPath = options.weights;
    sparse.outputPath = options.sparseWeights;
    sparse.targets.assign(options.sparsityTargets.begin(),
                          options.sparsityTargets.end());
    pm.addPass(createSparsify24Pass(sparse));
  }
  if (options.quantize != "none") {
    QuantizePassOptions quant;
    quant.scheme = options.quantize;
    quant.weightsPath = options.weights;
    quant.outputPath = options.quantizedWeights;
    quant.groupSize = options.groupSize;
    quant.zeroPoint = options.zeroPoint;
    quant.scaleType = options.scaleType;
    quant.calibrationPath = options.calibration;
    quant.targets.assign(options.quantizeTargets.begin(),
                         options.quantizeTargets.end());
    quant.exclude.assign(options.quantizeExclude.begin(),
                         options.quantizeExclude.end());
    pm.addPass(createQuantizePass(quant));
    if (fuse) {
      pm.addPass(createFuseLinearPass());
      // bf16/f16 leave extf + residual add chains.
      pm.addPass(createFuseElementwisePass());
    }
    pm.addPass(createCanonicalizerPass());
  }
  if (kv != "keep") {
    KVCacheTypePassOptions cache;
    cache.cacheType = kv;
    cache.calibrationPath = options.kvCacheCalibration;
    pm.addPass(createKVCacheTypePass(cache));
  }
  pm.addPass(createCSEPass());
  return success();
}

void ds::registerDSPipelines() {
  // Registered by hand (not PassPipelineRegistration) so that bad option
  // values are errors rather than silently ignored.
  registerPassPipeline(
      "ds-optimize",
      "The ds optimization pipeline: expert pruning, MoE decomposition, "
      "kernel fusion, 2:4 sparsity and quantization (see "
      "docs/generated/DSPasses.md)",
      [](OpPassManager &pm, StringRef text,
         function_ref<LogicalResult(const Twine &)> errorHandler) {
        OptimizeOptions options;
        if (failed(options.parseFromString(text)))
          return failure();
        return buildOptimizePipeline(pm, options, errorHandler);
      },
      [](function_ref<void(const detail::PassOptions &)> handler) {
        handler(OptimizeOptions());
      });
}
