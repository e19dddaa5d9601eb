//===- Passes.h - ds passes --------------------------------------*- C++
//-*-===//
//
// Declarations of every ds pass (generated from Passes.td), their
// registration, and the pattern-population entry points the passes wrap.
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_PASSES_H
#define DS_PASSES_PASSES_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Pass/Pass.h"

namespace mlir {
class RewritePatternSet;
} // namespace mlir

namespace ds {

#define GEN_PASS_DECL
#include "ds/passes/Passes.h.inc"

/// Adds the pattern that rewrites `ds.moe` into router / dispatch / grouped
/// matmul / combine steps.
void populateDecomposeMoEPatterns(RewritePatternSet &patterns);

/// Merges ds.linear (and, when `groupedMatmuls`, ds.grouped_matmul) ops
/// that read the same input in `root` into one wider op plus a ds.split.
/// Returns whether anything changed.
bool fuseHorizontalProjections(Operation *root, bool groupedMatmuls);

/// ds.router(ds.linear(x, w)) -> ds.fused_router(x, w).
void populateFuseRouterPatterns(RewritePatternSet &patterns);

/// The dispatch / grouped matmul / GLU / combine chain -> ds.fused_moe.
void populateFuseMoEPatterns(RewritePatternSet &patterns);

/// RMSNorm prologues and GLU/activation/residual epilogues ->
/// ds.fused_linear.
void populateFuseLinearPatterns(RewritePatternSet &patterns);

/// Chains of elementwise ops -> ds.fused_elementwise.
void populateFuseElementwisePatterns(RewritePatternSet &patterns);
/// Lone elementwise ops (ds.swiglu, ds.activation, ds.mul, arith on tensors)
/// become single-op ds.fused_elementwise: the form code generation lowers.
void populateWrapElementwisePatterns(RewritePatternSet &patterns);

/// Gives every KV cache of `fn` (the cache arguments of ds.cache_update,
/// the updates' results, the function results returning them) element type
/// `elt`. For f8E4M3FN, the ops writing and reading cache i (the i-th cache
/// argument) get scale scaleOf(i) (1 when null); other types drop scales.
/// Fails, with a diagnostic naming the op and `fn` unchanged, when a cache
/// has a use that cannot read another type.
LogicalResult setKVCacheType(func::FuncOp fn, FloatType elt,
                             function_ref<double(unsigned)> scaleOf = nullptr);

/// The scale of an e4m3 KV cache whose values reach `absmax`: the smallest
/// power of two that stores absmax without saturating (1 for 0).
double kvCacheScaleFor(double absmax);

#define GEN_PASS_REGISTRATION
#include "ds/passes/Passes.h.inc"

} // namespace ds

#endif // DS_PASSES_PASSES_H
