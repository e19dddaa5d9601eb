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

def FuseRouterPass : Pass<"ds-fuse-router"> {
  let summary = "Fold the gate projection into ds.router as one ds.fused_router kernel";
  let description = [{
    A `ds.router` whose logits come from a bias-free `ds.linear` used only
    by it becomes `ds.fused_router` on the linear's input and weight:

    ```mlir
    %l = ds.linear %x, %wg : tensor<?x64xf32>, tensor<8x64xf32> -> tensor<?x8xf32>
    %w, %i = ds.router %l bias %b {routing = #ds.routing<...>} : ...
    ```

    becomes

    ```mlir
    %w, %i = ds.fused_router %x, %wg bias %b {routing = #ds.routing<...>} : ...
    ```

    The fused router computes its logits in f32, so only routers whose
    logits are f32 are fused (results stay identical). Run it before `ds-fuse-horizontal` so the gate projection is
    not merged with the shared expert's.
  }];
}

def FuseMoEPass : Pass<"ds-fuse-moe"> {
  let summary = "Fold dispatch, grouped matmuls, GLU and combine into ds.fused_moe";
  let description = [{
    Matches the routed chain `ds.moe_dispatch` -> `ds.grouped_matmul` (gate
    and up, separate or merged by `ds-fuse-horizontal`) -> `ds.swiglu` ->
    `ds.grouped_matmul` (down) -> `ds.moe_combine`, where every intermediate
    has no other user, and replaces it with one `ds.fused_moe` over the
    stacked `[E, 2I, H]` gate/up weights (concatenated if they were apart):

    ```mlir
    %s, %o, %r = ds.moe_dispatch %x, %i experts 8 : ...
    %gu = ds.grouped_matmul %s, %wgu, %o : ...
    %g, %u = ds.split %gu axis 1 sizes [32, 32] : ...
    %h = ds.swiglu %g, %u : ...
    %d = ds.grouped_matmul %h, %wd, %o : ...
    %y = ds.moe_combine %d, %w, %r : ...
    ```

    becomes

    ```mlir
    %y = ds.fused_moe %x, %w, %i experts(%wgu, %wd) : ...
    ```

    Results are identical: the fused op is defined as that composition.
  }];
  let dependentDialects = ["::mlir::tensor::TensorDialect"];
}

def FuseLinearPass : Pass<"ds-fuse-linear"> {
  let summary = "Fold RMSNorm prologues and GLU, activation and residual epilogues into ds.fused_linear";
  let description = [{
    Grows `ds.fused_linear` kernels around `ds.linear` (or an existing
    `ds.fused_linear`) whose intermediate results have no other user:

    * prologue: `ds.rms_norm` feeding the linear;
    * GLU epilogue: `ds.swiglu` of the two equal halves of a `ds.split` of
      the linear's output (gate/up after `ds-fuse-horizontal`);
    * activation epilogue: `ds.activation` of the output;
    * residual epilogue: `arith.addf` of the output and another value of the
      same type.

    ```mlir
    %n = ds.rms_norm %x, %ln {epsilon = 1.0e-06 : f64} : ...
    %gu = ds.linear %n, %w : tensor<?x64xf32>, tensor<64x64xf32> -> tensor<?x64xf32>
    %g, %u = ds.split %gu axis 1 sizes [32, 32] : ...
    %h = ds.swiglu %g, %u : tensor<?x32xf32>
    %d = ds.linear %h, %wd : ...
    %y = arith.addf %x, %d : tensor<?x64xf32>
    ```

    becomes

    ```mlir
    %h = ds.fused_linear %x, %w norm(%ln) {activation = #ds.activation<silu>, gated, norm_epsilon = 1.0e-06 : f64} : ...
    %y = ds.fused_linear %h, %wd residual(%x) : ...
    ```

    Results are identical in f32; in narrower types the fused kernel rounds
    where the unfused ops stored their results.
  }];
}

//===----------------------------------------------------------------------===//
// Sparsity
//===----------------------------------------------------------------------===//

def PruneExpertsPass : Pass<"ds-prune-experts"> {
  let summary = "Drop rarely routed experts using a routing profile";
  let description = [{
    Reads a routing profile (`ds-run --profile-routing`, JSON) and, for each
    `ds.moe` with an entry (matched by `getRoutingSiteName`: its layer
    location, or its position among the function's routing ops), keeps the
    experts selected at least `min-count` times, at most the `keep-top` most
    selected when that is non-zero, and never fewer than `top_k`. The router
    can no longer select the others (`kept` in `#ds.routing`: their scores
    still enter softmax denominators and group scores, so on the profiled
    inputs the outputs are unchanged exactly), and the expert weights shrink
    to the kept slices (`select` on their `ds.param`s, through a fused
    gate/up `ds.split` too):

    ```mlir
    %g = ds.param "model.layers.1.mlp.experts.*.gate_proj.weight" : tensor<8x32x64xf32>
    %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2>} : ...
    ```

    becomes, when experts 2 and 6 were never selected,

    ```mlir
    %g = ds.param "model.layers.1.mlp.experts.*.gate_proj.weight" select [0, 1, 3, 4, 5, 7] : tensor<6x32x64xf32>
    %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2, kept = [0, 1, 3, 4, 5, 7]>} : ...
    ```

    Run it before `ds-optimize` (it rewrites `ds.moe`).
  }];
  let options = [
    Option<"profilePath", "profile", "std::string", /*default=*/"\"\"",
           "Routing profile JSON written by ds-run --profile-routing">,
    Option<"minCount", "min-count", "int64_t", /*default=*/"1",
           "Keep experts selected at least this many times">,
    Option<"keepTop", "keep-top", "int64_t", /*default=*/"0",
           "Keep at most this many experts per layer (0: no limit)">
  ];
}

#endif // DS_PASSES_TD
