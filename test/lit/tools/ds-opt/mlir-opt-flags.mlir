// mlir-opt's driver flags work in ds-opt: a textual pipeline, IR printing
// after each pass, and timing.
// RUN: ds-opt %s --pass-pipeline='builtin.module(func.func(canonicalize),ds-decompose-moe)' \
// RUN:   --mlir-print-ir-after-all --mlir-timing 2>&1 | FileCheck %s

// CHECK: IR Dump After Canonicalizer
// CHECK: IR Dump After DecomposeMoEPass
// CHECK: ds.moe_dispatch
// CHECK: Execution time report
// CHECK: DecomposeMoEPass
func.func @f(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>,
             %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>}
      : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
