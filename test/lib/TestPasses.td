//===- TestPasses.td - ds test-only passes ------------------*- tablegen -*-===//
//
// Passes that exist to test the dialect from lit; registered only in ds-opt.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_PASSES_TD
#define DS_TEST_PASSES_TD

include "mlir/Pass/PassBase.td"

def TestInferTypesPass : Pass<"ds-test-infer-types"> {
  let summary = "Report the result types each ds op infers from its operands";
  let description = [{
    For every ds op that implements `InferTypeOpInterface`, re-runs type
    inference on the op's current operands and emits a remark
    `inferred: <types>` on the op, so lit tests can check inference with
    dynamic and static shapes without building ops in C++.

    ```mlir
    %y = ds.linear %x, %w : tensor<?x4xf32>, tensor<8x4xf32> -> tensor<?x8xf32>
    // remark: inferred: tensor<?x8xf32>
    ```
  }];
}

#endif // DS_TEST_PASSES_TD
