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

    A `ds.moe` holding one process's block of the experts (`expert_grid`,
    from `ds-partition{ep=N}`) routes over all experts as above, but its
    routed part becomes one `ds.fused_moe` over the block (gate and up
    concatenated), which carries the same `expert_grid`: the unfused
    dispatch and grouped matmuls number the experts of the weights they
    are given, not a block of the routing's.
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

def FuseElementwisePass : Pass<"ds-fuse-elementwise"> {
  let summary = "Fuse chains of elementwise ops into ds.fused_elementwise";
  let description = [{
    An elementwise op whose operand comes from another elementwise op that
    only it uses becomes one `ds.fused_elementwise`
    computing both per element; repeated, chains and trees of any length
    become one kernel. Fusible: `arith.addf/subf/mulf/divf/maximumf/
    minimumf/negf/extf/truncf` on tensors, `ds.activation`, `ds.mul`
    (a producer of a broadcast operand is recomputed per element),
    `ds.swiglu`, and
    `ds.fused_elementwise` itself. Activations are expanded to `math` ops in
    f32 with the interpreter's formulas, so results are unchanged (up to
    the order of f32 operations inside the expanded activations).

    ```mlir
    %m = ds.mul %s, %g : tensor<?x64xf32>, tensor<?x1xf32> -> tensor<?x64xf32>
    %a = arith.addf %r, %m : tensor<?x64xf32>
    %y = arith.addf %x, %a : tensor<?x64xf32>
    ```

    becomes

    ```mlir
    %y = ds.fused_elementwise %x, %r, %s, %g : (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x1xf32>) -> tensor<?x64xf32> {
    ^bb0(%a: f32, %b: f32, %c: f32, %d: f32):
      %0 = arith.mulf %c, %d : f32
      %1 = arith.addf %b, %0 : f32
      %2 = arith.addf %a, %1 : f32
      ds.yield %2 : f32
    }
    ```

    A lone elementwise op stays as it is. Run it after `ds-fuse-linear`,
    which claims activations and residual adds next to GEMMs first.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

def PrepareCodegenPass : Pass<"ds-prepare-codegen"> {
  let summary = "Put every elementwise op into a ds.fused_elementwise, the "
                "form CPU code generation lowers";
  let description = [{
    Code generation lowers elementwise work through one op only,
    `ds.fused_elementwise` (to `linalg.generic`). This pass fuses chains of
    elementwise ops as `ds-fuse-elementwise` does, then wraps each elementwise
    op left alone (`arith` on tensors, `ds.activation`, `ds.mul`,
    `ds.swiglu`) into a single-op `ds.fused_elementwise`. Values are
    unchanged: the bodies compute in f32 with the interpreter's formulas.
    `ds-compile` and the JIT run it on a copy of the optimized module.

    ```mlir
    %y = ds.activation %x {kind = #ds.activation<silu>} : tensor<?x64xf32>
    ```

    becomes

    ```mlir
    %y = ds.fused_elementwise %x : (tensor<?x64xf32>) -> tensor<?x64xf32> {
    ^bb0(%a: f32):
      ... (silu as math/arith ops)
      ds.yield %r : f32
    }
    ```
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::math::MathDialect"];
}

//===----------------------------------------------------------------------===//
// Partitioning
//===----------------------------------------------------------------------===//

def PartitionPass : Pass<"ds-partition", "::mlir::ModuleOp"> {
  let summary = "Split a model over processes (tensor, expert, data and pipeline parallelism) with the shard dialect";
  let description = [{
    Turns every function into the program one of `tp` processes runs, with
    its collectives explicit, through MLIR's `shard` dialect:

    1. Declares `shard.grid @grid(shape = tp)`.
    2. Places Megatron-style annotations on the weights: the projections
       that produce attention's queries, keys and values (traced back
       through `ds.split_heads`, `ds.rope`, per-head `ds.rms_norm`, head-dim
       `ds.split` and `ds.cache_update`) and a dense MLP's gate and up
       projections are column-parallel (`split_axes = [[0]]`, with their
       bias); the projection reading the merged heads and a dense MLP's
       down projection are row-parallel (`[[], [0]]`); MLA's `kv_b` splits
       by heads (its head-major rows) while the latent `c_kv` and the
       shared `k_pe` stay replicated; a `ds.moe` splits every expert's
       intermediate size (routed and shared experts alike: gate/up along
       `I`, down along its `I`); the projection whose result a function
       returns (the LM head) is vocabulary-split and its result gathered;
       the embedding table is vocabulary-split too (`ds.embedding`'s
       `vocab_grid`: each process looks up the ids of its block, zeros for
       the others, and an all-reduce completes the rows; Megatron's
       vocabulary-parallel embedding), unless `split-embedding=false`.
       The router, norms and residual stream stay replicated.
    3. Runs `sharding-propagation` and `shard-partition` (the ds ops carry
       `ShardingInterface` models): a split weight becomes a sharded
       `ds.param` (`sharded @grid [[0]]`), head counts are divided, each
       row-parallel projection and each MoE block ends with one
       `shard.all_reduce`, the logits with a `shard.all_gather`, and KV
       cache arguments and results become the process's heads.

    ```mlir
    %wo = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %o = ds.linear %a, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
    ```

    becomes, with `tp=2`,

    ```mlir
    %wo = ds.param "model.layers.0.self_attn.o_proj.weight" sharded @grid [[], [0]] : tensor<64x32xf32>
    %o = ds.linear %a, %wo : tensor<?x?x32xf32>, tensor<64x32xf32> -> tensor<?x?x64xf32>
    %r = shard.all_reduce %o on @grid grid_axes = [0] : tensor<?x?x64xf32> -> tensor<?x?x64xf32>
    ```

    With `ep=N`, the grid is `[ep, tp]` (`ep` major) and every MoE block's
    routed experts are split into `ep` contiguous blocks (`ds.moe`'s
    `expert_grid`): each process routes every token over all experts and
    computes the slots routed to its block, and one all-reduce over both
    axes sums the blocks (in grid order, i.e. ascending experts, the order
    the unpartitioned combine adds them in). The shared expert is split
    along its intermediate size over both axes. Attention and the dense
    layers are tensor-parallel over `tp` and replicated over `ep`. The
    tokens are not distributed over the expert-parallel processes (no data
    parallelism yet), so no all-to-all dispatch is needed;
    `ds-decompose-moe` turns a block of experts into a `ds.fused_moe` over
    it.

    With `dp=N`, the grid gains a leading `dp` axis: every argument
    (tokens, positions, KV caches) is split along its batch, so each replica
    runs its block of the sequences with its own caches, and the results
    are split the same way; the weights are replicated over `dp`, and the
    tensor- and expert-parallel collectives stay within a replica.

    With `dp=N moe-all-to-all` (DeepSeek-V3's serving layout: attention
    data-parallel, experts expert-parallel over the same processes), every
    MoE layer's routed experts are split into `N` blocks over the
    data-parallel axis too (`expert_grid` and `all_to_all` on `ds.moe`):
    each process routes its own tokens, the selected slots travel to the
    processes holding their experts with a variable-count all-to-all
    (dropless: no capacity, no token dropped), the outputs come back with a
    second one, and each token adds its experts in ascending expert order,
    as the whole layer does. The shared expert stays replicated. It needs
    `ep=1` (the experts are split over the replicas instead).

    With `pp=N` (pipeline parallelism), every function is first cut into
    `N` stages of consecutive layers (an attention op marks a layer; stage
    `k` starts at layer `k * L / N`, at the point between two layers where
    the fewest activations cross: the residual stream). Each stage becomes
    a function `@<name>.stage<k>` that takes the token ids, the positions
    and the KV caches of its own layers, and is partitioned by the other
    options as any function. The activations crossing into a stage arrive
    through `shard.recv` over the leading `pp` grid axis from the previous
    stage, whose `shard.send` hands them on; the last stage computes the
    logits. Weights and what is computed from the arguments alone (the
    embedding) are repeated in each stage that uses them. `@<name>` stays
    a declaration with the whole signature whose `ds.pipeline_stages` lists
    the stages; each stage's `ds.pipeline_arg` / `ds.pipeline_result` say
    which of its arguments and results it has. Process `r` runs the stage
    of its index along `pp`. The runtime splits a step's rows into
    micro-batches that follow each other through the stages, so that the
    stages work at once, and hands the last stage's logits to every stage.

    ```mlir
    func.func private @decode(...) attributes {ds.pipeline_axis = 0 : i64,
        ds.pipeline_stages = [@decode.stage0, @decode.stage1]}
    func.func @decode.stage0(%tokens ..., %positions ..., %k0 ..., %v0 ...) -> (...) {
      ...
      %s = shard.send %h on @grid grid_axes = [0] destination = [1] : (tensor<?x1x64xf32>) -> tensor<?x1x64xf32>
      return %k0u, %v0u : ...
    }
    func.func @decode.stage1(%tokens ..., %positions ..., %k1 ..., %v1 ...) -> (...) {
      %e = tensor.empty(%b) : tensor<?x1x64xf32>
      %h = shard.recv %e on @grid grid_axes = [0] source = [0] : (tensor<?x1x64xf32>) -> tensor<?x1x64xf32>
      ...
    }
    ```

    Every process (of a stage, with `pp`) runs the same program on its own
    shard of the weights;
    the reference interpreter runs all of them with emulated collectives
    (`ds-run --ranks`). Run it on the imported (or decomposed) model,
    before fusion and before quantization: quantized and 2:4 weights cannot
    be sharded yet and are refused. Head counts, intermediate sizes and the
    vocabulary must divide by `tp`. GQA attention with fewer KV heads than
    `tp` (a divisor of it) repeats each KV head `tp / heads` times, as
    Megatron and vLLM do: the K and V projections select their rows with
    repeats (`select`), the caches get `tp` heads, and each process holds
    the one its query heads read; otherwise `tp` must divide the KV heads.
    A split that does not divide fails naming the op, as the pass does when
    `pp` exceeds a function's layers.
    `tp=1 ep=1 dp=1 pp=1` leaves the module unchanged.
  }];
  let options = [
    Option<"tp", "tp", "int64_t", "1",
           "Tensor-parallel processes (heads, projections and expert FFNs "
           "split over them)">,
    Option<"ep", "ep", "int64_t", "1",
           "Expert-parallel processes (each holds a block of every MoE "
           "layer's routed experts)">,
    Option<"dp", "dp", "int64_t", "1",
           "Data-parallel replicas (each runs a block of the batch's "
           "sequences, with its own KV caches)">,
    Option<"pp", "pp", "int64_t", "1",
           "Pipeline stages (each runs a block of consecutive layers and "
           "sends its activations to the next)">,
    Option<"moeAllToAll", "moe-all-to-all", "bool", "false",
           "With dp (and ep = 1), split every MoE layer's routed experts "
           "over the data-parallel processes as well and move each token's "
           "rows to its experts' processes and back with all-to-alls "
           "(attention data-parallel, experts expert-parallel)">,
    Option<"splitEmbedding", "split-embedding", "bool", "true",
           "With tp, split the embedding table by vocabulary over the "
           "tensor-parallel processes (one all-reduce of the looked-up "
           "rows); false keeps it replicated (no collective, the whole "
           "table on every process)">,
    Option<"printCollectives", "print-collectives", "bool", "false",
           "Report, per function, the collectives of the per-process "
           "program and the values each process exchanges per token (a "
           "remark at the function)">,
  ];
  let dependentDialects = ["::mlir::shard::ShardDialect",
                           "::mlir::tensor::TensorDialect",
                           "::mlir::arith::ArithDialect"];
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def QuantizePass : Pass<"ds-quantize", "::mlir::ModuleOp"> {
  let summary = "Quantize GEMM weights (and activations) at compile time";
  let description = [{
    Rewrites the weights of the GEMMs it targets into `!ds.qtensor` params
    computed now from the original checkpoint (`weights`) and written to a
    safetensors file (`output`), which the module lists in its
    `ds.weight_files` attribute so that `ds-run` and the runtime find it.
    Nothing is re-derived at run time. Schemes:

    | `scheme` | weights | activations |
    |---|---|---|
    | `int8` | i8 per output channel, `block = [1, 0]` | float |
    | `int4` | i4 (`zero-point`: ui4 + zero points) per `group-size` channels, f16 scales (`scale-type`) | float |
    | `w8a8` | i8 per output channel | i8 per token, dynamic (static per tensor with `calibration`) |
    | `w4a8` | i4 per `group-size` channels, f16 scales (`scale-type`) | i8 per token, as `w8a8` (llama.cpp's Q4_0 x Q8_0, with one activation scale per token) |
    | `fp8` | e4m3, 128x128 blocks (DeepSeek-V3) | e4m3 per 1x128 group, dynamic |
    | `bf16`, `f16` | rounded to the type | the GEMM runs in the type (`arith.truncf` / `arith.extf` around it) |

    Targets (`targets`, the allow list): `linear` (attention projections,
    dense MLPs, shared experts), `experts` (stacked routed expert weights of
    `ds.grouped_matmul`, `ds.fused_moe`, `ds.moe`), `lm_head` (a GEMM whose
    result the function returns; not by default for `fp8`, which
    DeepSeek-V3 keeps in BF16; `exclude=lm_head` keeps it for any scheme)
    and `router` (gate projections; off by default: routing
    decisions are sensitive). `int4` scales come from a per-group clipping
    search (`clip-search`, least squared error) rather than the absmax. `exclude` (the deny list) is
    a list of regular expressions: a weight any of whose `ds.param` names
    matches one stays as it is. Norms, softmax, the router and the residual
    stream always stay in their type; for `bf16`/`f16` a `ds.fused_linear`
    is split so that its RMSNorm prologue and residual add stay in f32.

    Weights may be `ds.param`s or `tensor.concat`s of them (after
    `ds-fuse-horizontal`): the concatenated weight is quantized as one
    tensor. Activation quantization becomes `ds.quantize` before a
    `ds.linear` / `ds.grouped_matmul`, or the `input_quant` /
    `hidden_quant` attributes of fused ops; a `ds.moe` is decomposed first.

    ```mlir
    %w = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
    %y = ds.linear %x, %w : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
    ```

    becomes with `scheme=int8`

    ```mlir
    %w = ds.param "model.layers.0.self_attn.o_proj.weight:q" scales "model.layers.0.self_attn.o_proj.weight:scale"
        : !ds.qtensor<64x64xi8, f32, block = [1, 0]>
    %y = ds.linear %x, %w : tensor<?x?x64xf32>, !ds.qtensor<64x64xi8, f32, block = [1, 0]> -> tensor<?x?x64xf32>
    ```

    `calibration` (JSON from `ds-run --calibrate`: the absolute maximum of
    every GEMM input on sample inputs) gives `w8a8` / `w4a8` static
    per-tensor activation scales for the dense GEMMs. The CPU backend runs
    `w8a8`, and `w4a8` with f16 scales and groups of a multiple of 8 that
    divide K, as integer dot products (AVX-512 VNNI, else AVX2); other
    `w4a8` groups run the int4 GEMM on the quantized activations. `ds-run --reference` reports
    the error against the unquantized module.
  }];
  let options = [
    Option<"scheme", "scheme", "std::string", /*default=*/"\"int8\"",
           "int8 | int4 | w8a8 | w4a8 | fp8 | bf16 | f16">,
    Option<"groupSize", "group-size", "int64_t", /*default=*/"128",
           "int4, w4a8: input channels per scale (32, 64, 128, ...)">,
    Option<"zeroPoint", "zero-point", "bool", /*default=*/"false",
           "int4: asymmetric (ui4 values with per-group zero points)">,
    Option<"scaleType", "scale-type", "std::string", /*default=*/"\"\"",
           "int4, w4a8: how the scales are stored, f16 (the default: 4.5 bits a "
           "weight at group 32, as llama.cpp's Q4_0; each scale rounded to "
           "f16 before the values are quantized with it) or f32">,
    Option<"clipSearch", "clip-search", "bool", /*default=*/"true",
           "int4: per group, clip the range by the ratio (1 .. 0.5) with "
           "the least squared error instead of using absmax">,
    ListOption<"targets", "targets", "std::string",
               "Which GEMMs to quantize: linear, experts, lm_head, router "
               "(default: linear, experts, and lm_head except for fp8)">,
    ListOption<"exclude", "exclude", "std::string",
               "Regular expressions on weight names to leave alone">,
    Option<"weightsPath", "weights", "std::string", /*default=*/"\"\"",
           "The original checkpoint (directory or .safetensors file)">,
    Option<"outputPath", "output", "std::string", /*default=*/"\"\"",
           "Where to write the quantized weights (.safetensors)">,
    Option<"calibrationPath", "calibration", "std::string", /*default=*/"\"\"",
           "w8a8, w4a8: activation ranges (ds-run --calibrate) for static "
           "scales">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect",
                           "::mlir::tensor::TensorDialect"];
}

//===----------------------------------------------------------------------===//
// Sparsity
//===----------------------------------------------------------------------===//

def KVCacheTypePass : Pass<"ds-kv-cache-type", "::mlir::ModuleOp"> {
  let summary = "Store the KV caches in bf16, f16 or FP8 (e4m3)";
  let description = [{
    Changes the element type of every KV cache: each function argument that
    is the cache of a `ds.cache_update`, the updates' results, and the
    function results that return them. The updates then round the rows they
    write to nearest even, and attention reads the narrow values exactly
    (`ds.attention`'s `k` / `v`, `ds.mla_attention`'s `c_kv` / `k_pe`
    accept a narrower type than the queries'). Queries, scores, softmax and
    outputs keep their types, so the only change in the numbers is the
    rounding of the cached keys, values or latents, and the caches take half
    the memory and half the bandwidth of f32 ones (decode attention at long
    contexts reads mostly the cache). `type=f32` widens narrow caches back.

    `type=f8e4m3` stores `f8E4M3FN` caches (a quarter of f32's bytes) with a
    per-cache scale, as vLLM's and TensorRT-LLM's FP8 KV caches do: every
    `ds.cache_update` writing cache `i` gets `kv_scale`, and the attention
    reading it `k_scale` / `v_scale` (`c_kv_scale` / `k_pe_scale` for MLA).
    An element `x` is stored as the e4m3 nearest `x / scale`, saturating at
    +-448, and read as `e4m3 * scale`. Scales are powers of two, so that
    scaling is exact (e4m3's relative precision, 3 mantissa bits, does not
    depend on the scale; the scale only sets where values saturate). They
    are `scale` (1 by default) for every cache, or, with `calibration`
    (the `kv_caches` ranges `ds-run --calibrate` writes: the largest
    absolute value written into each cache on sample inputs), per cache the
    smallest power of two that stores its range without saturating. Cache
    `i` is the function's `i`-th cache argument (the prefill and decode
    functions list their caches in the same order).

    ```mlir
    %kc2 = ds.cache_update %kc[%pos], %k {kv_scale = 0.125 : f64} : tensor<?x4096x8x128xf8E4M3FN>, tensor<?x1xi64>, tensor<?x1x8x128xf32>
    %o = ds.attention %q, %kc2, %vc2, %pos {k_scale = 0.125 : f64, scale = 0.088 : f64, v_scale = 0.0625 : f64} : tensor<?x1x32x128xf32>, tensor<?x4096x8x128xf8E4M3FN>, ...
    ```

    ```mlir
    func.func @decode(%tok: tensor<?x1xi64>, %pos: tensor<?x1xi64>, %kc: tensor<?x4096x8x128xf32>, ...) -> (..., tensor<?x4096x8x128xf32>, ...) {
      %kc2 = ds.cache_update %kc[%pos], %k : tensor<?x4096x8x128xf32>, tensor<?x1xi64>, tensor<?x1x8x128xf32>
      %o = ds.attention %q, %kc2, %vc2, %pos {scale = 0.088 : f64} : tensor<?x1x32x128xf32>, tensor<?x4096x8x128xf32>, ...
    ```

    becomes, with `type=bf16`,

    ```mlir
    func.func @decode(%tok: tensor<?x1xi64>, %pos: tensor<?x1xi64>, %kc: tensor<?x4096x8x128xbf16>, ...) -> (..., tensor<?x4096x8x128xbf16>, ...) {
      %kc2 = ds.cache_update %kc[%pos], %k : tensor<?x4096x8x128xbf16>, tensor<?x1xi64>, tensor<?x1x8x128xf32>
      %o = ds.attention %q, %kc2, %vc2, %pos {scale = 0.088 : f64} : tensor<?x1x32x128xf32>, tensor<?x4096x8x128xbf16>, ...
    ```

    A cache used by anything but cache updates, attention and `return`, or
    an attention reading a cache beside a value that is not one, is an
    error naming the op.
  }];
  let options = [
    Option<"cacheType", "type", "std::string", /*default=*/"\"bf16\"",
           "Element type of the caches: bf16, f16, f8e4m3 or f32">,
    Option<"scale", "scale", "double", /*default=*/"1.0",
           "f8e4m3: every cache's scale (a power of two) without calibration">,
    Option<"calibrationPath", "calibration", "std::string",
           /*default=*/"\"\"",
           "f8e4m3: value ranges per cache (ds-run --calibrate); each cache's "
           "scale is the smallest power of two that stores its range">
  ];
}

def PlaceExpertsPass : Pass<"ds-place-experts"> {
  let summary = "Place experts on expert-parallel ranks from a routing profile, replicating the hottest";
  let description = [{
    Balances expert parallelism at compile time. For each `ds.moe` with an
    entry in the routing profile (`ds-run --profile-routing`, matched by
    `getRoutingSiteName` as in `ds-prune-experts`), it lays the routed
    experts out in `E + replicas` weight slots, `ep` contiguous blocks of
    them, one per process of `ds-partition{ep}`, so that the largest
    token load of a process over the mean is as small as it can make it:

    1. Replication: `replicas` times, the expert with the most tokens per
       copy (`count / copies`; ties: the lower expert) gains a copy, at
       most one per process.
    2. Packing: the copies, heaviest first, each go to the least loaded
       process that has a free slot, preferring one with no copy of that
       expert yet (ties: the lower process); a process lists its experts
       ascending.

    The slots are recorded in the routing (`slots` in `#ds.routing`: the
    router then returns slot indices, choosing among an expert's replicas
    by the token's own selection, which splits its tokens between them)
    and the expert weights become the slots' slices (`select` on their
    `ds.param`s; a replica repeats a slice). Results are those of the
    unplaced model up to the order of additions (a token's experts are
    summed in slot order); with `ds-partition{ep}` afterwards, each process
    holds one block of `(E + replicas) / ep` slots.

    ```mlir
    %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : ...
    ```

    becomes, with `ep=2 replicas=2` and a profile where expert 0 takes half
    of the selections,

    ```mlir
    %g = ds.param "model.layers.1.mlp.experts.*.gate_proj.weight" select [0, 1, 3, 0, 2, 3] : tensor<6x32x64xf32>
    %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2, slots = [0, 1, 3, 0, 2, 3]>} : ...
    ```

    With `print-balance`, one line per placed layer goes to stderr: the
    profile's max / mean tokens per process with the contiguous blocks
    `ds-partition{ep}` would cut, and with this placement. Run it after
    `ds-prune-experts` (if at all) and before `ds-partition` or
    `ds-optimize`; replicas need `top_k` >= 2 (the choice among them reads
    the token's other experts).
  }];
  let options = [
    Option<"profilePath", "profile", "std::string", /*default=*/"\"\"",
           "Routing profile JSON written by ds-run --profile-routing">,
    Option<"ep", "ep", "int64_t", /*default=*/"1",
           "Expert-parallel processes the slots are balanced over">,
    Option<"replicas", "replicas", "int64_t", /*default=*/"0",
           "Extra copies of the hottest experts per layer (E + replicas "
           "must divide by ep)">,
    Option<"printBalance", "print-balance", "bool", /*default=*/"false",
           "Print each layer's max / mean load per process before and after">
  ];
}

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

def Sparsify24Pass : Pass<"ds-sparsify-24", "::mlir::ModuleOp"> {
  let summary = "2:4 semi-structured magnitude pruning of GEMM weights";
  let description = [{
    For the GEMM weights it targets, keeps the two largest magnitudes of
    every 4 consecutive input channels (ties: the lower index) and stores
    the result compressed as `!ds.sparse24` params: the kept values
    (`[..., K/2]`) and 2-bit indices (`meta`, `[..., K/8]` u8), computed now
    from the checkpoint (`weights`) and written to `output`, which the module
    lists in `ds.weight_files`. Targets and the deny list work as in
    `ds-quantize` (`linear`, `experts`, `lm_head`, `router`; default
    `linear` and `experts`). Weights whose input width is not a multiple of
    4 stay dense (with a warning). The error this causes is reported like
    quantization's: `ds-run --reference <before> --report`.

    ```mlir
    %w = ds.param "model.layers.0.mlp.down_proj.weight" : tensor<64x96xf32>
    ```

    becomes

    ```mlir
    %w = ds.param "model.layers.0.mlp.down_proj.weight:values" meta "model.layers.0.mlp.down_proj.weight:meta"
        : !ds.sparse24<64x96xf32>
    ```

    Pruning changes the function (unlike the other passes it is not meant
    to preserve results); trained models are usually fine-tuned afterwards.
    Run it before `ds-quantize`, which leaves sparse weights alone.
  }];
  let options = [
    ListOption<"targets", "targets", "std::string",
               "Which GEMMs to prune: linear, experts, lm_head, router "
               "(default: linear, experts)">,
    ListOption<"exclude", "exclude", "std::string",
               "Regular expressions on weight names to leave dense">,
    Option<"weightsPath", "weights", "std::string", /*default=*/"\"\"",
           "The original checkpoint (directory or .safetensors file)">,
    Option<"outputPath", "output", "std::string", /*default=*/"\"\"",
           "Where to write the compressed weights (.safetensors)">
  ];
}

#endif // DS_PASSES_TD
