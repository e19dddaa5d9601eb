//===- Passes.td - ds pass definitions ----------------------*- tablegen -*-===//
//
// Every ds pass, declared once: its flag, summary, description with IR
// before and after, options and the dialects it creates ops in.
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_TD
#define DS_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Lowering
//===----------------------------------------------------------------------===//

def DecomposeMoEPass : Pass<"ds-decompose-moe"> {
  let summary = "Rewrite ds.moe into router, dispatch, grouped matmuls and combine";
  let description = [{
    Expands every `ds.moe` into the explicit MoE execution steps that later
    passes fuse, quantize and partition:

    ```mlir
    %y = ds.moe %x router %wg experts(%g, %u, %d)
        {routing = #ds.routing<num_experts = 8, top_k = 2, norm_topk_prob = true>}
        : (tensor<?x?x64xf32>, ...) -> tensor<?x?x64xf32>
    ```

    becomes

    ```mlir
    %flat = tensor.collapse_shape %x [[0, 1], [2]] : tensor<?x?x64xf32> into tensor<?x64xf32>
    %logits = ds.linear %flat, %wg : ... -> tensor<?x8xf32>
    %w, %idx = ds.router %logits {routing = #ds.routing<...>} : ...
    %sorted, %offsets, %rows = ds.moe_dispatch %flat, %idx experts 8 : ...
    %gate = ds.grouped_matmul %sorted, %g, %offsets : ...
    %up = ds.grouped_matmul %sorted, %u, %offsets : ...
    %h = ds.swiglu %gate, %up : ...
    %down = ds.grouped_matmul %h, %d, %offsets : ...
    %routed = ds.moe_combine %down, %w, %rows : ...
    %y = tensor.expand_shape %routed [[0, 1], [2]] output_shape [%b, %s, 64] : ...
    ```

    A shared expert becomes `ds.linear`/`ds.swiglu`/`ds.linear` on the
    flattened tokens added to the routed output (`arith.addf`), gated by
    `ds.activation sigmoid` and `ds.mul` when `shared_expert_gate` is
    present. The result is numerically identical to `ds.moe`.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

//===----------------------------------------------------------------------===//
// Fusion
//===----------------------------------------------------------------------===//

def FuseHorizontalProjectionsPass : Pass<"ds-fuse-horizontal"> {
  let summary = "Merge projections that read the same input into one wider matmul";
  let description = [{
    Linears that share their input (Q/K/V; MLA's q_a and kv_a; SwiGLU gate
    and up; a shared expert's gate and up next to the router) become one
    `ds.linear` over the weights concatenated along the output axis, followed
    by a `ds.split` that hands each former user its columns. Grouped matmuls
    that share input rows and offsets (routed gate and up) are merged the
    same way along the per-expert output axis. The weights are concatenated
    with `tensor.concat` of `ds.param`s, which codegen packs at compile time.

    ```mlir
    %q = ds.linear %h, %wq : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
    %k = ds.linear %h, %wk : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
    ```

    becomes

    ```mlir
    %w = tensor.concat dim(0) %wq, %wk : (tensor<64x64xf32>, tensor<32x64xf32>) -> tensor<96x64xf32>
    %qk = ds.linear %h, %w : tensor<?x?x64xf32>, tensor<96x64xf32> -> tensor<?x?x96xf32>
    %q, %k = ds.split %qk axis 2 sizes [64, 32] : tensor<?x?x96xf32> -> tensor<?x?x64xf32>, tensor<?x?x32xf32>
    ```

    Every dot product is unchanged, so results are bit-identical. Projections
    merge only when their weights (and biases, all or none) have one element
    type and are defined before the first of them.
  }];
  let options = [
    Option<"fuseGroupedMatmuls", "grouped-matmuls", "bool", /*default=*/"true",
           "Also merge ds.grouped_matmul ops that share input rows and offsets">
  ];
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
}

#endif // DS_PASSES_TD
