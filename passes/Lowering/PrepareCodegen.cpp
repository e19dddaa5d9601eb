//===- PrepareCodegen.cpp - elementwise ops as ds.fused_elementwise -------===//
//
// The shell of ds-prepare-codegen: elementwise fusion, then wrapping of the
// ops left alone (populateFuseElementwisePatterns and
// populateWrapElementwisePatterns, both in Fusion/FuseElementwise.cpp).
//
//===----------------------------------------------------------------------===//

#include "ds/passes/Passes.h"

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace ds {
#define GEN_PASS_DEF_PREPARECODEGENPASS
#include "ds/passes/Passes.h.inc"
} // namespace ds

using namespace mlir;
using namespace ds;

namespace {
struct PrepareCodegenPass
    : public ds::impl::PrepareCodegenPassBase<PrepareCodegenPass> {
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
