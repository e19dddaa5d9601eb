//===- TestInferTypes.cpp - report inferred ds result types ---------------===//
//
// The ds-test-infer-types pass: emits the result types that ds ops infer from
// their operands as remarks, for lit tests of shape inference.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSDialect.h"
#include "ds/test/lib/TestPasses.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"

namespace ds::test {
#define GEN_PASS_DEF_TESTINFERTYPESPASS
#include "ds/test/lib/TestPasses.h.inc"
} // namespace ds::test

using namespace mlir;

namespace {
struct TestInferTypesPass
    : public ds::test::impl::TestInferTypesPassBase<TestInferTypesPass> {
  void runOnOperation() override {
    getOperation()->walk([](InferTypeOpInterface op) {
      if (!isa<ds::DSDialect>(op->getDialect()))
        return;
      SmallVector<Type> types;
      if (failed(op.inferReturnTypes(
              op->getContext(), op->getLoc(), op->getOperands(),
              op->getRawDictionaryAttrs(), op->getPropertiesStorage(),
              op->getRegions(), types)))
        return;
      // Printed unquoted, unlike types streamed into a diagnostic.
      std::string text;
      llvm::raw_string_ostream os(text);
      llvm::interleaveComma(types, os);
      op.emitRemark("inferred: ") << text;
    });
  }
};
} // namespace
