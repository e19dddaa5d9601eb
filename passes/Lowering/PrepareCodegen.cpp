//===- PrepareCodegen.cpp - elementwise ops as ds.fused_elementwise -------===//
//
// The shell of ds-prepare-codegen: elementwise fusion, then wrapping of the
// ops left alone (populateFuseElementwisePatterns and
// populateWrapElementwisePatterns, both in Fusion/FuseElementwise.cpp).
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::ds {
#define GEN_PASS_DEF_PREPARECODEGENPASS
#include "passes/Passes.h.inc"
} // namespace mlir::ds

using namespace mlir;
using namespace mlir::ds;

namespace {
struct PrepareCodegenPass
    : public mlir::ds::impl::PrepareCodegenPassBase<PrepareCodegenPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateFuseElementwisePatterns(patterns);
    populateWrapElementwisePatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      getOperation()->emitError("elementwise fusion did not converge");
      signalPassFailure();
    }
  }
};
} // namespace
