//===- Pipelines.h - named ds pass pipelines ---------------------*- C++
//-*-===//
//
// Pipelines usable from ds-opt (--pass-pipeline='builtin.module(ds-optimize)')
// and from C++ (buildOptimizePipeline).
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_PIPELINES_PIPELINES_H
#define DS_PASSES_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir::ds {

struct OptimizeOptions : public PassPipelineOptions<OptimizeOptions> {
  PassOptions::Option<bool> fusion{
      *this, "fusion",
      llvm::cl::desc("Fuse routers, routed MoE chains, sibling projections "
                     "and linear prologues/epilogues into kernels"),
      llvm::cl::init(true)};
};

/// ds-optimize: decompose ds.moe, then (with fusion) ds-fuse-router,
/// ds-fuse-moe, ds-fuse-horizontal and ds-fuse-linear, with canonicalization
/// and CSE in between.
void buildOptimizePipeline(OpPassManager &pm, const OptimizeOptions &options);

/// Registers the named pipelines with the global registry.
void registerDSPipelines();

} // namespace mlir::ds

#endif // DS_PASSES_PIPELINES_PIPELINES_H
