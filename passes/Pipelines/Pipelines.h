//===- Pipelines.h - named ds pass pipelines ---------------------*- C++
//-*-===//
//
// Pipelines usable from ds-opt (--pass-pipeline='builtin.module(ds-optimize)')
// and from C++ (buildOptimizePipeline).
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_PIPELINES_PIPELINES_H
#define DS_PASSES_PIPELINES_PIPELINES_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace ds {

struct OptimizeOptions : public PassPipelineOptions<OptimizeOptions> {
  PassOptions::Option<int> level{
      *this, "level",
      llvm::cl::desc("0: canonicalize and CSE only; 1: also decompose ds.moe; "
                     "2: also fuse kernels (default)"),
      llvm::cl::init(2)};
  PassOptions::Option<bool> fusion{
      *this, "fusion",
      llvm::cl::desc("Fuse routers, routed MoE chains, sibling projections "
                     "and linear prologues/epilogues into kernels (level 2; "
                     "false gives level 1)"),
      llvm::cl::init(true)};
  PassOptions::Option<std::string> quantize{
      *this, "quantize",
      llvm::cl::desc("ds-quantize scheme: none, int8, int4, w8a8, w4a8, fp8, "
                     "bf16, f16"),
      llvm::cl::init("none")};
  PassOptions::Option<std::string> weights{
      *this, "weights", llvm::cl::desc("The checkpoint quantization reads"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> quantizedWeights{
      *this, "quantized-weights",
      llvm::cl::desc("Where quantization writes its weights (.safetensors)"),
      llvm::cl::init("")};
  PassOptions::Option<int64_t> groupSize{
      *this, "group-size", llvm::cl::desc("int4 / w4a8 group size"),
      llvm::cl::init(128)};
  PassOptions::Option<bool> zeroPoint{*this, "zero-point",
                                      llvm::cl::desc("int4 with zero points"),
                                      llvm::cl::init(false)};
  PassOptions::Option<std::string> scaleType{
      *this, "scale-type",
      llvm::cl::desc("int4 / w4a8: scales stored as f16 (default) or f32"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> calibration{
      *this, "calibration",
      llvm::cl::desc("w8a8 / w4a8: activation ranges for static scales"),
      llvm::cl::init("")};
  PassOptions::ListOption<std::string> quantizeTargets{
      *this, "quantize-targets",
      llvm::cl::desc("ds-quantize targets (linear, experts, lm_head, router)")};
  PassOptions::ListOption<std::string> quantizeExclude{
      *this, "quantize-exclude",
      llvm::cl::desc("Weight-name regular expressions not to quantize")};
  PassOptions::Option<std::string> sparsity{
      *this, "sparsity",
      llvm::cl::desc("none, or 2:4 (ds-sparsify-24 after fusion, before "
                     "quantization)"),
      llvm::cl::init("none")};
  PassOptions::Option<std::string> sparseWeights{
      *this, "sparse-weights",
      llvm::cl::desc("Where 2:4 pruning writes its weights (.safetensors)"),
      llvm::cl::init("")};
  PassOptions::ListOption<std::string> sparsityTargets{
      *this, "sparsity-targets",
      llvm::cl::desc("ds-sparsify-24 targets (linear, experts, lm_head, "
                     "router)")};
  PassOptions::Option<std::string> kvCache{
      *this, "kv-cache",
      llvm::cl::desc("KV cache element type: keep (as imported), f32, bf16, "
                     "f16 or f8e4m3 (ds-kv-cache-type)"),
      llvm::cl::init("keep")};
  PassOptions::Option<std::string> kvCacheCalibration{
      *this, "kv-cache-calibration",
      llvm::cl::desc("kv-cache=f8e4m3: per-cache value ranges (ds-run "
                     "--calibrate) for the caches' scales"),
      llvm::cl::init("")};
  PassOptions::Option<std::string> pruneProfile{
      *this, "prune-profile",
      llvm::cl::desc("Routing profile: prune experts with ds-prune-experts "
                     "before anything else"),
      llvm::cl::init("")};
  PassOptions::Option<int64_t> pruneMinCount{
      *this, "prune-min-count", llvm::cl::desc("ds-prune-experts min-count"),
      llvm::cl::init(1)};
  PassOptions::Option<int64_t> pruneKeepTop{
      *this, "prune-keep-top", llvm::cl::desc("ds-prune-experts keep-top"),
      llvm::cl::init(0)};
  PassOptions::Option<int64_t> tp{
      *this, "tp",
      llvm::cl::desc("ds-partition tp: tensor-parallel processes (1: none)"),
      llvm::cl::init(1)};
  PassOptions::Option<int64_t> ep{
      *this, "ep",
      llvm::cl::desc("ds-partition ep: expert-parallel processes (1: none)"),
      llvm::cl::init(1)};
  PassOptions::Option<int64_t> dp{
      *this, "dp",
      llvm::cl::desc("ds-partition dp: data-parallel replicas (1: none)"),
      llvm::cl::init(1)};
  PassOptions::Option<int64_t> pp{
      *this, "pp", llvm::cl::desc("ds-partition pp: pipeline stages (1: none)"),
      llvm::cl::init(1)};
  PassOptions::Option<bool> moeAllToAll{
      *this, "moe-all-to-all",
      llvm::cl::desc("ds-partition moe-all-to-all: experts split over the "
                     "data-parallel processes, tokens moved by all-to-all"),
      llvm::cl::init(false)};
};

/// ds-optimize: [ds-prune-experts], [ds-partition{tp, ep, dp, pp}], then by
/// level: decompose ds.moe (1), ds-fuse-router, ds-fuse-moe,
/// ds-fuse-horizontal, ds-fuse-linear and ds-fuse-elementwise (2), then
/// [ds-sparsify-24], [ds-quantize] (followed by ds-fuse-linear at level 2,
/// which folds activation quantization into the fused linears),
/// [ds-kv-cache-type], with canonicalization and CSE in between. Fails, with a
/// message through `errorHandler` (when given), on options out of range (level
/// outside 0..2, an unknown sparsity or KV cache type).
LogicalResult buildOptimizePipeline(
    OpPassManager &pm, const OptimizeOptions &options,
    function_ref<LogicalResult(const Twine &)> errorHandler = nullptr);

/// Registers the named pipelines with the global registry.
void registerDSPipelines();

} // namespace ds

#endif // DS_PASSES_PIPELINES_PIPELINES_H
