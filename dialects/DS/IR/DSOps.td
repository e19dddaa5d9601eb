//===- DSOps.td - ds operations -----------------------------*- tablegen -*-===//
//
// The operations of the ds dialect. Each description states the exact math
// and the shapes; result types follow from the operands (InferTypeOpInterface)
// and a written result type must be compatible with the inferred one (it may
// be more static, never contradictory).
//
//===----------------------------------------------------------------------===//

#ifndef DS_OPS_TD
#define DS_OPS_TD

include "ds/dialects/DS/IR/DSAttrs.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/Dialect/Shard/IR/ShardBase.td"

//===----------------------------------------------------------------------===//
// Base classes and type constraints
//===----------------------------------------------------------------------===//

def DS_FloatTensor : RankedTensorOf<[AnyFloat]>;
def DS_IntTensor : RankedTensorOf<[I32, I64]>;
// Weights: float tensors, block-quantized `!ds.qtensor`s or 2:4 sparse
// `!ds.sparse24`s; element types are checked in C++ (on the logical type).
def DS_WeightTensor : AnyTypeOf<[RankedTensorOf<[AnyType]>, DS_QTensorType,
                                 DS_Sparse24Type]>;
// GEMM inputs: float activations, or activations quantized by ds.quantize.
def DS_GemmInput : AnyTypeOf<[DS_FloatTensor, DS_QTensorType]>;

class DS_Op<string mnemonic, list<Trait> traits = []>
    : Op<DS_Dialect, mnemonic, traits>;

/// A side-effect-free op whose result types are inferred from its operands.
class DS_InferOp<string mnemonic, list<Trait> traits = []>
    : DS_Op<mnemonic, !listconcat(traits,
                                  [Pure, InferTypeOpAdaptorWithIsCompatible])>;

//===----------------------------------------------------------------------===//
// Weights
//===----------------------------------------------------------------------===//

def DS_ParamOp : DS_Op<"param", [Pure]> {
  let summary = "a named model weight";
  let description = [{
    Names a weight tensor that lives outside the IR, by its exact checkpoint
    name (e.g. `model.layers.3.mlp.gate.weight`). The result type is the
    tensor's logical shape and element type; it must be static.

    A name containing one `*` denotes stacked per-expert weights: the
    result's leading dimension is the number of experts `E`, and slice `e`
    is the checkpoint tensor whose name has `*` replaced by the decimal
    expert index (`model.layers.3.mlp.experts.*.down_proj.weight`). This
    keeps a 256-expert layer a single op.

    `select` keeps only some slices along the leading dimension: slice `i`
    of the result is slice `select[i]` of the named tensor (for a stacked
    param, expert `select[i]`). Expert pruning uses it.

    ```mlir
    %w = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<2048x2048xbf16>
    %g = ds.param "model.layers.3.mlp.experts.*.gate_proj.weight" : tensor<64x1408x2048xbf16>
    %p = ds.param "model.layers.3.mlp.experts.*.up_proj.weight" select [0, 5, 9] : tensor<3x1408x2048xbf16>
    ```

    A quantized weight (`!ds.qtensor`) also names its f32 `scales` and, for
    unsigned storage, its u8 `zero_points` (shape `ceil(shape / block)`,
    per expert for stacked params, whose names then hold the `*` too). The
    values are stored as `ds::Quant.h` describes (4-bit values two a byte).
    A 2:4 sparse weight (`!ds.sparse24`) names its kept values and its
    `meta` indices. DeepSeek-V3's FP8 checkpoints are read as they are:

    ```mlir
    %w = ds.param "model.layers.0.mlp.down_proj.weight" scales "model.layers.0.mlp.down_proj.weight_scale_inv"
        : !ds.qtensor<7168x18432xf8E4M3FN, bf16, block = [128, 128]>
    ```

    In a partitioned (per-rank) program a param may be one process's shard
    of the named tensor: `sharded @grid [[axes of dim 0], [axes of dim 1],
    ...]` splits dimension `d` evenly over the listed axes of the
    `shard.grid` (as `shard.sharding`'s `split_axes` do), and the result
    type is the shard's. Dimension `d` of the named tensor is then the
    result's times the product of those axes' sizes, and a process with
    linear index `i` over them (row-major, in the order listed) holds its
    `i`-th slice. `ds-partition` writes these.

    ```mlir
    shard.grid @grid(shape = 2)
    %wo = ds.param "model.layers.0.self_attn.o_proj.weight" sharded @grid [[], [0]] : tensor<2048x1024xf32>
    ```
  }];
  let arguments = (ins StrAttr:$name, OptionalAttr<DenseI64ArrayAttr>:$select,
                       OptionalAttr<StrAttr>:$scales,
                       OptionalAttr<StrAttr>:$zero_points,
                       OptionalAttr<StrAttr>:$meta,
                       OptionalAttr<FlatSymbolRefAttr>:$grid,
                       OptionalAttr<Shard_GridAxesArrayAttr>:$split_axes);
  let results = (outs DS_WeightTensor:$result);
  let assemblyFormat = [{
    $name (`select` $select^)? (`scales` $scales^)?
    (`zero_points` $zero_points^)? (`meta` $meta^)?
    (`sharded` $grid^ custom<SplitAxes>($split_axes))? attr-dict `:`
    type($result)
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Type":$type, "::llvm::StringRef":$name), [{
      build($_builder, $_state, type, $_builder.getStringAttr(name),
            ::mlir::DenseI64ArrayAttr(), ::mlir::StringAttr(),
            ::mlir::StringAttr(), ::mlir::StringAttr(),
            ::mlir::FlatSymbolRefAttr(), ::mlir::shard::GridAxesArrayAttr());
    }]>
  ];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// True when the name has a `*` expert placeholder.
    bool isStacked() { return getName().contains('*'); }
    /// True when the result is one process's shard of the named tensor.
    bool isSharded() { return static_cast<bool>(getGridAttr()); }
    /// The checkpoint name of expert `e`'s slice of a stacked param.
    std::string getExpertName(int64_t e) { return expertName(getName(), e); }
    /// `pattern` with its `*` replaced by `e`.
    static std::string expertName(::llvm::StringRef pattern, int64_t e);
    /// The index, in the named tensor, of result slice `i` (after select).
    int64_t getSourceIndex(int64_t i) {
      return getSelect() ? (*getSelect())[i] : i;
    }
  }];
}

//===----------------------------------------------------------------------===//
// Dense layers
//===----------------------------------------------------------------------===//

def DS_EmbeddingOp : DS_InferOp<"embedding"> {
  let summary = "token embedding lookup";
  let description = [{
    `result[i..., :] = table[ids[i...], :]`. `table` is `[V, H]`, `ids` has
    any shape `[...]` of i32/i64 token ids in `[0, V)`, the result is
    `[..., H]` with the table's element type. No scaling by `sqrt(H)`.

    ```mlir
    %h = ds.embedding %table[%ids] : tensor<32000x4096xbf16>, tensor<?x?xi32> -> tensor<?x?x4096xbf16>
    ```

    In a program partitioned with a vocabulary-split embedding
    (`ds-partition{tp=N}`), `vocab_grid` and `vocab_grid_axes` say that the
    table holds one process's contiguous block of the vocabulary: with
    `V_l` rows, the process with index `i` along those axes of the grid
    holds tokens `[i * V_l, (i + 1) * V_l)`. Ids are still those of the
    whole vocabulary; an id outside the block gives a row of zeros, so the
    result is this process's part of the lookup (a `shard.all_reduce` over
    the axes completes it, exactly: one process contributes each row).
  }];
  let arguments = (ins DS_WeightTensor:$table, DS_IntTensor:$ids,
                       OptionalAttr<FlatSymbolRefAttr>:$vocab_grid,
                       OptionalAttr<DenseI16ArrayAttr>:$vocab_grid_axes);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $table `[` $ids `]` attr-dict `:` type($table) `,` type($ids) `->` type($result)
  }];
}

def DS_RMSNormOp : DS_InferOp<"rms_norm"> {
  let summary = "root-mean-square normalization over the last axis";
  let description = [{
    With `x` of shape `[..., D]` and `weight` of shape `[D]`:
    `v = mean(x^2)` over the last axis in f32,
    `y = round_to(x.dtype, x * rsqrt(v + epsilon)) * weight`.
    The normalized value is rounded to the input type before the weight
    multiply, as Hugging Face does. No bias, no `1 + w` offset.

    ```mlir
    %y = ds.rms_norm %x, %w {epsilon = 1.0e-06 : f64} : tensor<?x?x4096xbf16>, tensor<4096xbf16>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_WeightTensor:$weight,
                       F64Attr:$epsilon);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def DS_LinearOp : DS_InferOp<"linear"> {
  let summary = "y = x Wᵀ + b over the last axis";
  let description = [{
    `x` is `[..., K]`, `weight` is `[N, K]` (checkpoint layout
    `[out, in]`), the optional `bias` is `[N]`; the result is `[..., N]` in
    `x`'s element type: `y[..., n] = sum_k x[..., k] * weight[n, k] + bias[n]`,
    accumulated in f32.

    ```mlir
    %q = ds.linear %x, %wq : tensor<?x?x2048xf32>, tensor<2048x2048xf32> -> tensor<?x?x2048xf32>
    %k = ds.linear %x, %wk, %bk : tensor<?x?x2048xf32>, tensor<256x2048xf32>, tensor<256xf32> -> tensor<?x?x256xf32>
    ```
  }];
  let arguments = (ins DS_GemmInput:$input, DS_WeightTensor:$weight,
                       Optional<DS_WeightTensor>:$bias);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:` type($input) `,` type($weight)
    (`,` type($bias)^)? `->` type($result)
  }];
  let hasCanonicalizer = 1;
}

def DS_SwiGLUOp : DS_InferOp<"swiglu", [AllTypesMatch<["gate", "up"]>]> {
  let summary = "gated activation act(gate) * up";
  let description = [{
    `result = activation(gate) * up`, elementwise; `gate` and `up` have the
    same shape and element type. The activation defaults to `silu`
    (`x * sigmoid(x)`), which gives the SwiGLU of every supported family.

    ```mlir
    %h = ds.swiglu %g, %u : tensor<?x?x1408xbf16>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$gate, DS_FloatTensor:$up,
                       DefaultValuedAttr<DS_ActivationAttr,
                                         "::ds::Activation::silu">:$activation);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = "$gate `,` $up attr-dict `:` type($gate)";
}

def DS_ActivationOp : DS_InferOp<"activation"> {
  let summary = "elementwise activation";
  let description = [{
    Applies `kind` elementwise, in f32, rounding back to the input type:
    `silu(x) = x sigmoid(x)`, `gelu` (erf form), `gelu_tanh`, `relu`,
    `sigmoid(x) = 1 / (1 + exp(-x))`.

    ```mlir
    %s = ds.activation sigmoid %g : tensor<?x1xf32>
    ```
  }];
  let arguments = (ins DS_ActivationAttr:$kind, DS_FloatTensor:$input);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = "custom<ActivationKind>($kind) $input attr-dict `:` type($input)";
}

def DS_MulOp : DS_InferOp<"mul"> {
  let summary = "elementwise product with size-1 broadcasting";
  let description = [{
    `lhs` and `rhs` have the same rank and element type; along each axis the
    sizes are equal or one of them is 1 (broadcast). Used for gates such as
    Qwen2-MoE's `sigmoid(x w_gᵀ) * shared_expert(x)`.

    ```mlir
    %y = ds.mul %shared, %gate : tensor<?x2048xf32>, tensor<?x1xf32> -> tensor<?x2048xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$lhs, DS_FloatTensor:$rhs);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Shape plumbing
//===----------------------------------------------------------------------===//

def DS_SplitHeadsOp : DS_InferOp<"split_heads"> {
  let summary = "view the last axis as [heads, head_dim]";
  let description = [{
    `[..., heads * head_dim] -> [..., heads, head_dim]`, head-major: head `h`
    owns channels `[h * head_dim, (h + 1) * head_dim)`.

    ```mlir
    %q = ds.split_heads %x into 16 : tensor<?x?x2048xf32> -> tensor<?x?x16x128xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, ConfinedAttr<I64Attr, [IntPositive]>:$num_heads);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `into` $num_heads attr-dict `:` type($input) `->` type($result)
  }];
  let hasFolder = 1;
}

def DS_MergeHeadsOp : DS_InferOp<"merge_heads"> {
  let summary = "flatten [heads, head_dim] into the last axis";
  let description = [{
    `[..., heads, head_dim] -> [..., heads * head_dim]`, head-major; the
    inverse of `ds.split_heads`.

    ```mlir
    %o = ds.merge_heads %a : tensor<?x?x16x128xf32> -> tensor<?x?x2048xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasFolder = 1;
}

def DS_SplitOp : DS_InferOp<"split"> {
  let summary = "split one axis into consecutive static-size pieces";
  let description = [{
    Result `i` is `input[..., o_i : o_i + sizes[i], ...]` along `axis`,
    where `o_i` is the sum of the earlier sizes. When the axis is static the
    sizes must add up to it. Used for MLA's `[nope, rope]` and `[latent,
    rope]` splits and for fused `gate_up_proj` weights.

    ```mlir
    %nope, %pe = ds.split %q axis 3 sizes [128, 64] : tensor<?x?x16x192xf32> -> tensor<?x?x16x128xf32>, tensor<?x?x16x64xf32>
    ```
  }];
  let arguments = (ins DS_WeightTensor:$input,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$axis,
                       DenseI64ArrayAttr:$sizes);
  let results = (outs Variadic<DS_WeightTensor>:$results);
  let assemblyFormat = [{
    $input `axis` $axis `sizes` $sizes attr-dict `:` type($input) `->` type($results)
  }];
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def DS_RopeOp : DS_InferOp<"rope"> {
  let summary = "rotary position embedding";
  let description = [{
    `positions` is `[B, S]` (integer absolute positions); `input` is
    `[B, S, D]` or `[B, S, heads, D]`. With `d = rope.dim <= D`, the first
    `d` channels of each vector at position `p` are rotated by angles
    `p * inv_freq[j]` with the pairing given by `rope.style` (see
    `#ds.rope`), `cos`/`sin` scaled by the rope's attention factor; channels
    `[d, D)` pass through. The result has the input's type.

    ```mlir
    %q2 = ds.rope %q, %pos {rope = #ds.rope<dim = 128, theta = 1000000.0>} : tensor<?x?x32x128xbf16>, tensor<?x?xi64>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_IntTensor:$positions,
                       DS_RopeAttr:$rope);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $positions attr-dict `:` type($input) `,` type($positions)
  }];
}

def DS_AttentionOp : DS_InferOp<"attention"> {
  let summary = "causal scaled-dot-product attention (MHA / GQA / MQA)";
  let description = [{
    `q` is `[B, S, Hq, D]`, `k` is `[B, T, Hkv, D]`, `v` is `[B, T, Hkv, Dv]`,
    `positions` `[B, S]` holds each query's absolute position. `Hq` must be a
    multiple of `Hkv`; query head `h` reads KV head `h / (Hq / Hkv)`.
    Key/value row `j` has absolute position `j`, and query `(b, s)` attends
    to the rows `j <= positions[b, s]` (and `j > positions[b, s] - window`
    when `sliding_window` is set):

    `o[b,s,h] = sum_j softmax_j(scale * q[b,s,h] . k[b,j,h/g]) v[b,j,h/g]`,

    softmax in f32. The result is `[B, S, Hq, Dv]`, of `q`'s element type.
    `k` and `v` share an element type, which may be narrower than `q`'s (a
    bf16 / f16 KV cache): their values are read exactly. An `f8E4M3FN` cache
    (see `ds-kv-cache-type`) holds `e4m3 * scale`: `k_scale` and `v_scale`
    (positive powers of two, present exactly when the cache is e4m3) are
    the scales its `ds.cache_update`s wrote with. Prefill passes the new
    keys (`T = S`, positions `0..S-1`); decode passes the whole KV cache
    (`T` = cache capacity) and the unwritten rows are masked by position.

    ```mlir
    %o = ds.attention %q, %k, %v, %pos {scale = 0.088388347648318 : f64}
        : tensor<?x?x32x128xf32>, tensor<?x?x8x128xf32>, tensor<?x?x8x128xf32>, tensor<?x?xi64> -> tensor<?x?x32x128xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$q, DS_FloatTensor:$k, DS_FloatTensor:$v,
                       DS_IntTensor:$positions, F64Attr:$scale,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$sliding_window,
                       OptionalAttr<F64Attr>:$k_scale,
                       OptionalAttr<F64Attr>:$v_scale);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $q `,` $k `,` $v `,` $positions attr-dict `:` type($q) `,` type($k) `,`
    type($v) `,` type($positions) `->` type($result)
  }];
  let hasVerifier = 1;
}

def DS_MLAAttentionOp : DS_InferOp<"mla_attention"> {
  let summary = "DeepSeek multi-head latent attention over a latent KV";
  let description = [{
    The attention core of MLA, reading the compressed (latent) KV so that a
    KV cache holds only `c_kv` and `k_pe`:

    * `q_nope` `[B, S, H, dn]`, `q_pe` `[B, S, H, dr]` (already rotated);
    * `c_kv` `[B, T, c]`: the latent after `kv_a_layernorm`;
    * `k_pe` `[B, T, dr]`: the rotated RoPE key shared by all heads;
    * `kv_b` `[H * (dn + dv), c]`: the `kv_b_proj` weight;
    * `positions` `[B, S]`.

    Semantics: `kv = c_kv kv_bᵀ` viewed `[B, T, H, dn + dv]` and split into
    `k_nope` (first `dn`) and `v` (last `dv`);
    `K_h = [k_nope_h, k_pe]`, `Q_h = [q_nope_h, q_pe_h]`; then exactly
    `ds.attention` with the same causal position rule and `scale`. The
    result is `[B, S, H, dv]`, with `dv = rows(kv_b) / H - dn`. A backend
    may absorb `kv_b` into the query and output instead of expanding K/V.
    `c_kv` and `k_pe` share an element type, which may be narrower than the
    queries' (a bf16 / f16 latent cache, or `f8E4M3FN` holding `e4m3 *
    scale` with `c_kv_scale` / `k_pe_scale`, as `ds.attention`'s
    `k_scale`); the expanded `kv` is rounded to `q_nope`'s type, as the
    unabsorbed form computes it in the activations' type.

    ```mlir
    %o = ds.mla_attention %qn, %qp, %ckv, %kpe, %wkvb, %pos {scale = 0.0721 : f64}
        : tensor<?x?x16x128xf32>, tensor<?x?x16x64xf32>, tensor<?x?x512xf32>, tensor<?x?x64xf32>, tensor<4096x512xf32>, tensor<?x?xi64> -> tensor<?x?x16x128xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$q_nope, DS_FloatTensor:$q_pe,
                       DS_FloatTensor:$c_kv, DS_FloatTensor:$k_pe,
                       DS_WeightTensor:$kv_b, DS_IntTensor:$positions,
                       F64Attr:$scale, OptionalAttr<F64Attr>:$c_kv_scale,
                       OptionalAttr<F64Attr>:$k_pe_scale);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $q_nope `,` $q_pe `,` $c_kv `,` $k_pe `,` $kv_b `,` $positions attr-dict
    `:` type($q_nope) `,` type($q_pe) `,` type($c_kv) `,` type($k_pe) `,`
    type($kv_b) `,` type($positions) `->` type($result)
  }];
  let hasVerifier = 1;
}

def DS_CacheUpdateOp : DS_InferOp<"cache_update"> {
  let summary = "write new key/value rows into a KV cache";
  let description = [{
    `cache` is `[B, Tmax, ...]`, `update` is `[B, S, ...]` with the same
    trailing shape, `positions` is `[B, S]`. The result is the cache with
    row `positions[b, s]` of batch `b` replaced by `update[b, s]`, rounded
    to nearest even when the cache's element type is narrower than the
    update's (a bf16 / f16 KV cache, see `ds-kv-cache-type`). An
    `f8E4M3FN` cache has a `kv_scale` (a positive power of two, present
    exactly for e4m3 caches): an element `x` is stored as the e4m3 nearest
    `x / kv_scale`, saturating at +-448, and holds `e4m3 * kv_scale`. Every
    position must be in `[0, Tmax)`. Value semantics:
    bufferization makes it in place. Caches hold post-RoPE keys
    (`[B, Tmax, Hkv, D]`), values, or MLA's latent `c_kv` `[B, Tmax, c]`
    and `k_pe` `[B, Tmax, dr]`.

    ```mlir
    %kc2 = ds.cache_update %kc[%pos], %k : tensor<?x4096x8x128xf32>, tensor<?x?xi64>, tensor<?x?x8x128xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$cache, DS_IntTensor:$positions,
                       DS_FloatTensor:$update, OptionalAttr<F64Attr>:$kv_scale);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $cache `[` $positions `]` `,` $update attr-dict `:` type($cache) `,`
    type($positions) `,` type($update)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

def DS_RouterOp : DS_InferOp<"router"> {
  let summary = "score experts and select the top-k per token";
  let description = [{
    `logits` is `[N, E]` with `E = routing.num_experts`; the optional
    `bias` `[E]` is the score-correction bias, used for selection only.
    Applies `#ds.routing` (all in f32) and returns the routing weights
    `[N, top_k]` (f32) and the selected expert indices `[N, top_k]` (i32),
    ordered by decreasing selection score.

    ```mlir
    %w, %idx = ds.router %logits bias %b {routing = #ds.routing<num_experts = 64, top_k = 6, scoring = sigmoid>}
        : tensor<?x64xf32>, tensor<64xf32> -> tensor<?x6xf32>, tensor<?x6xi32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$logits, Optional<DS_FloatTensor>:$bias,
                       DS_RoutingAttr:$routing);
  let results = (outs RankedTensorOf<[F32]>:$weights,
                      RankedTensorOf<[I32]>:$indices);
  let assemblyFormat = [{
    $logits (`bias` $bias^)? attr-dict `:` type($logits)
    (`,` type($bias)^)? `->` type($weights) `,` type($indices)
  }];
}

def DS_MoEDispatchOp : DS_InferOp<"moe_dispatch"> {
  let summary = "sort token copies by expert (dropless)";
  let description = [{
    `input` is `[N, H]`, `indices` `[N, k]` holds each token's selected
    experts in `[0, num_experts)`. Every (token, slot) pair becomes one row:
    the rows are ordered by expert, and within an expert by `t * k + slot`.
    Results:

    * `sorted` `[N * k, H]`: `sorted[r] = input[rows[r] / k]`;
    * `offsets` `[num_experts + 1]` (i64): expert `e` owns rows
      `[offsets[e], offsets[e + 1])`; `offsets[0] = 0`,
      `offsets[E] = N * k`;
    * `rows` `[N * k]` (i64): the flat `(token, slot)` index `t * k + slot`
      of each sorted row.

    No capacity limit: no token is dropped.

    ```mlir
    %sorted, %offsets, %rows = ds.moe_dispatch %x, %idx experts 64
        : tensor<?x2048xf32>, tensor<?x6xi32> -> tensor<?x2048xf32>, tensor<65xi64>, tensor<?xi64>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_IntTensor:$indices,
                       ConfinedAttr<I64Attr, [IntPositive]>:$num_experts);
  let results = (outs DS_FloatTensor:$sorted, RankedTensorOf<[I64]>:$offsets,
                      RankedTensorOf<[I64]>:$rows);
  let assemblyFormat = [{
    $input `,` $indices `experts` $num_experts attr-dict `:` type($input) `,`
    type($indices) `->` type($sorted) `,` type($offsets) `,` type($rows)
  }];
}

def DS_GroupedMatmulOp : DS_InferOp<"grouped_matmul"> {
  let summary = "per-expert matmul over expert-sorted rows";
  let description = [{
    `input` is `[M, K]` with rows grouped by expert as `ds.moe_dispatch`
    produces them, `weight` is the stacked expert weights `[E, N, K]`,
    `offsets` `[E + 1]`. For `offsets[e] <= r < offsets[e + 1]`:
    `result[r, n] = sum_k input[r, k] * weight[e, n, k]` (f32 accumulation),
    in `input`'s element type. Experts with no rows are not touched.

    ```mlir
    %g = ds.grouped_matmul %sorted, %w_gate, %offsets : tensor<?x2048xf32>, tensor<64x1408x2048xf32>, tensor<65xi64> -> tensor<?x1408xf32>
    ```
  }];
  let arguments = (ins DS_GemmInput:$input, DS_WeightTensor:$weight,
                       RankedTensorOf<[I64]>:$offsets);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $offsets attr-dict `:` type($input) `,`
    type($weight) `,` type($offsets) `->` type($result)
  }];
}

def DS_MoECombineOp : DS_InferOp<"moe_combine"> {
  let summary = "weighted scatter-add of expert outputs back to tokens";
  let description = [{
    `expert_out` is `[M, H]` in dispatch order, `weights` `[N, k]` (f32) the
    router weights, `rows` `[M]` the flat `(token, slot)` index of each row.
    `result[t] = sum over r with rows[r] / k == t of
    weights[t, rows[r] % k] * expert_out[r]`, accumulated in f32 in row
    order (i.e. ascending expert, as Hugging Face does), rounded to
    `expert_out`'s element type. The result is `[N, H]`.

    ```mlir
    %y = ds.moe_combine %down, %w, %rows : tensor<?x2048xf32>, tensor<?x6xf32>, tensor<?xi64> -> tensor<?x2048xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$expert_out, RankedTensorOf<[F32]>:$weights,
                       RankedTensorOf<[I64]>:$rows);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $expert_out `,` $weights `,` $rows attr-dict `:` type($expert_out) `,`
    type($weights) `,` type($rows) `->` type($result)
  }];
}

def DS_MoEOp : DS_InferOp<"moe", [AttrSizedOperandSegments]> {
  let summary = "a whole Mixture-of-Experts feed-forward block";
  let description = [{
    `input` is `[..., H]`; the result has the same type. With
    `router_weight` `[E, H]`, stacked expert weights `expert_gate`,
    `expert_up` `[E, I, H]` and `expert_down` `[E, H, I]`:

    ```
    x = input flattened to [N, H]
    (w, idx) = ds.router(x router_weightᵀ, score_bias) with `routing`
    y[t] = sum_j w[t, j] * down_e(act(gate_e x[t]) * up_e x[t]),  e = idx[t, j]
    ```

    With the optional shared expert (`shared_gate`, `shared_up` `[Is, H]`,
    `shared_down` `[H, Is]`) its SwiGLU MLP output is added to every token,
    multiplied by `sigmoid(x shared_expert_gateᵀ)` when the optional
    `shared_expert_gate` `[1, H]` is given (Qwen2-MoE).

    `ds-decompose-moe` rewrites it into `ds.linear`, `ds.router`,
    `ds.moe_dispatch`, `ds.grouped_matmul`, `ds.swiglu` and
    `ds.moe_combine`.

    ```mlir
    %y = ds.moe %x router %wg experts(%g, %u, %d) shared(%sg, %su, %sd)
        {routing = #ds.routing<num_experts = 8, top_k = 2, norm_topk_prob = true>}
        : (tensor<?x?x1024xf32>, tensor<8x1024xf32>, tensor<8x1408x1024xf32>, tensor<8x1408x1024xf32>,
           tensor<8x1024x1408xf32>, tensor<1408x1024xf32>, tensor<1408x1024xf32>, tensor<1024x1408xf32>)
        -> tensor<?x?x1024xf32>
    ```

    In a program partitioned for expert parallelism (`ds-partition{ep=N}`),
    `expert_grid` and `expert_grid_axes` say that the routed expert weights
    hold one process's contiguous block of the experts: with `E_l` experts
    in the weights, the process with index `i` along those axes of the
    grid holds experts `[i * E_l, (i + 1) * E_l)`. Routing still scores and
    selects among all of them; only the selected slots whose expert is in
    the block are computed here, so the result is this process's part of
    the sum (a `shard.all_reduce` over the axes completes it).

    With `all_to_all` as well (attention data-parallel, experts
    expert-parallel over the same processes, as DeepSeek-V3 is served), the
    input holds this process's own tokens, not the tokens every process of
    the group holds: each selected slot's row goes to the process whose
    block holds its expert (a variable-count all-to-all over the axes),
    every process runs its experts over the rows it receives, the outputs
    return to their tokens' process (a second all-to-all), and each token
    adds its experts' outputs in ascending expert order as the whole layer
    does. The result is then the whole MoE output of the local tokens (no
    all-reduce follows), dropless.
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_WeightTensor:$router_weight,
                       Optional<DS_FloatTensor>:$score_bias,
                       DS_WeightTensor:$expert_gate, DS_WeightTensor:$expert_up,
                       DS_WeightTensor:$expert_down,
                       Optional<DS_WeightTensor>:$shared_gate,
                       Optional<DS_WeightTensor>:$shared_up,
                       Optional<DS_WeightTensor>:$shared_down,
                       Optional<DS_WeightTensor>:$shared_expert_gate,
                       DS_RoutingAttr:$routing,
                       DefaultValuedAttr<DS_ActivationAttr,
                                         "::ds::Activation::silu">:$activation,
                       OptionalAttr<FlatSymbolRefAttr>:$expert_grid,
                       OptionalAttr<DenseI16ArrayAttr>:$expert_grid_axes,
                       UnitAttr:$all_to_all);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `router` $router_weight (`bias` $score_bias^)?
    `experts` `(` $expert_gate `,` $expert_up `,` $expert_down `)`
    (`shared` `(` $shared_gate^ `,` $shared_up `,` $shared_down `)`)?
    (`shared_expert_gate` $shared_expert_gate^)?
    attr-dict `:` functional-type(operands, results)
  }];
}

//===----------------------------------------------------------------------===//
// Fused kernels: each op is one kernel for codegen
//===----------------------------------------------------------------------===//

def DS_FusedLinearOp : DS_InferOp<"fused_linear", [AttrSizedOperandSegments]> {
  let summary = "a linear with its RMSNorm prologue and epilogues, one kernel";
  let description = [{
    One GEMM with everything fusion folded into it, in this order:

    ```
    h = norm_weight ? rms_norm(input, norm_weight, norm_epsilon) : input
    y = h weightᵀ (+ bias)                      // [..., N]
    y = gated ? act(y[..., :N/2]) * y[..., N/2:] // GLU epilogue, [..., N/2]
              : act(y)                           // when `activation` is set
    y = y (+ residual)
    ```

    With `input_quant`, `h` is quantized as `ds.quantize` does right before
    the GEMM (W8A8 / FP8: the kernel quantizes its own input).
    The normalized input is rounded to the input type as in `ds.rms_norm`;
    the GEMM accumulates in f32, and the result is rounded to the result type
    wherever the unfused ops stored theirs (after the GEMM, after the
    activation or GLU, after the residual add), so fusion never changes a
    value; in f32 all of these roundings are exact.
    `gated` requires `activation` and an even N. Produced by
    `ds-fuse-linear` from `ds.rms_norm`, `ds.linear`, `ds.split` +
    `ds.swiglu`, `ds.activation` and residual `arith.addf`.

    ```mlir
    %y = ds.fused_linear %x, %w norm(%ln) residual(%x)
        {activation = #ds.activation<silu>, gated, norm_epsilon = 1.0e-06 : f64}
        : (tensor<?x?x64xf32>, tensor<64x32xf32>, tensor<64xf32>, tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_WeightTensor:$weight,
                       Optional<DS_WeightTensor>:$norm_weight,
                       Optional<DS_WeightTensor>:$bias,
                       Optional<DS_FloatTensor>:$residual,
                       OptionalAttr<F64Attr>:$norm_epsilon,
                       OptionalAttr<DS_ActivationAttr>:$activation,
                       UnitAttr:$gated,
                       OptionalAttr<DS_ActQuantAttr>:$input_quant);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`norm` `(` $norm_weight^ `)`)? (`bias` `(` $bias^ `)`)?
    (`residual` `(` $residual^ `)`)? attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def DS_FusedRouterOp : DS_InferOp<"fused_router"> {
  let summary = "gate projection, scoring, grouped top-k and scaling, one kernel";
  let description = [{
    `ds.router` applied to the logits `input weightᵀ` computed in f32 (as
    DeepSeek's router does) from `input` `[N, H]` and the gate weight
    `[E, H]`; the optional `bias` is the selection-only score correction.
    Returns weights `[N, top_k]` (f32) and expert indices `[N, top_k]` (i32).

    ```mlir
    %w, %i = ds.fused_router %x, %wg bias %b {routing = #ds.routing<num_experts = 8, top_k = 2, scoring = sigmoid>}
        : tensor<?x64xf32>, tensor<8x64xf32>, tensor<8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_WeightTensor:$weight,
                       Optional<DS_FloatTensor>:$bias, DS_RoutingAttr:$routing);
  let results = (outs RankedTensorOf<[F32]>:$weights,
                      RankedTensorOf<[I32]>:$indices);
  let assemblyFormat = [{
    $input `,` $weight (`bias` $bias^)? attr-dict `:` type($input) `,`
    type($weight) (`,` type($bias)^)? `->` type($weights) `,` type($indices)
  }];
}

def DS_FusedMoEOp : DS_InferOp<"fused_moe"> {
  let summary = "dispatch, grouped gate/up, GLU, grouped down and combine, one kernel";
  let description = [{
    The routed part of a MoE block as one kernel, in the shape of DeepGEMM's
    "mega MoE": with `input` `[N, H]`, router `weights` and `indices`
    `[N, k]`, stacked `gate_up` `[E, 2I, H]` (gate rows first) and `down`
    `[E, H, I]`:

    ```
    result[t] = sum_j weights[t, j] * down_e (act(gate_e x_t) * up_e x_t),  e = indices[t, j]
    ```

    summed in ascending expert order like `ds.moe_combine`. `input_quant`
    quantizes `x` before the gate/up GEMM and `hidden_quant` the GLU output
    before the down GEMM (as `ds.quantize` does). Exactly the
    composition `ds.moe_dispatch`, `ds.grouped_matmul` (gate, up),
    `ds.swiglu`, `ds.grouped_matmul` (down), `ds.moe_combine`, which
    `ds-fuse-moe` replaces. The shared expert stays beside it as
    `ds.fused_linear` ops.

    With `expert_grid` and `expert_grid_axes` (expert parallelism, as on
    `ds.moe`), `gate_up` and `down` hold one process's contiguous block of
    `E_l` experts: the process with index `i` along those axes of the grid
    holds experts `[i * E_l, (i + 1) * E_l)` of the `indices`' numbering,
    and only the slots routed to them are computed and summed here (this
    process's part of the sum). `ds-decompose-moe` turns a `ds.moe` with a
    block of experts into this op directly, since the unfused dispatch and
    grouped matmuls number the experts of one process. `all_to_all`
    (`ds.moe`'s, which `ds-decompose-moe` carries over) says the input holds
    this process's own tokens: the rows travel to their experts' processes
    and back with variable-count all-to-alls, and the result is the whole
    MoE output of the local tokens.

    ```mlir
    %y = ds.fused_moe %x, %w, %i experts(%gu, %d)
        : (tensor<?x64xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<8x64x64xf32>, tensor<8x64x32xf32>) -> tensor<?x64xf32>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, RankedTensorOf<[F32]>:$weights,
                       DS_IntTensor:$indices, DS_WeightTensor:$gate_up,
                       DS_WeightTensor:$down,
                       DefaultValuedAttr<DS_ActivationAttr,
                                         "::ds::Activation::silu">:$activation,
                       OptionalAttr<DS_ActQuantAttr>:$input_quant,
                       OptionalAttr<DS_ActQuantAttr>:$hidden_quant,
                       OptionalAttr<FlatSymbolRefAttr>:$expert_grid,
                       OptionalAttr<DenseI16ArrayAttr>:$expert_grid_axes,
                       UnitAttr:$all_to_all);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weights `,` $indices `experts` `(` $gate_up `,` $down `)`
    attr-dict `:` functional-type(operands, results)
  }];
}

def DS_FusedElementwiseOp : DS_Op<"fused_elementwise",
                                  [Pure, IsolatedFromAbove]> {
  let summary = "a chain of elementwise ops, one kernel";
  let description = [{
    Applies the scalar function in `body` to every element: the inputs have
    the result's rank and, along each axis, the result's size or 1 (size-1
    axes broadcast, as `ds.mul` does); block argument `i` is an element of
    input `i` (its element type), and `ds.yield` gives the result element
    (the body is isolated from above: it computes from its arguments and
    its own constants).
    The body holds scalar `arith` and `math` ops only; each rounds to its own
    type, so a body that widens with `arith.extf`, computes in f32 and
    narrows with `arith.truncf` rounds exactly where the fused ops did.

    `ds-fuse-elementwise` builds it from chains of `arith` elementwise ops
    on tensors, `ds.activation`, `ds.mul` and `ds.swiglu` (activations
    expanded to `math.exp` / `math.erf` / `math.tanh` in f32):

    ```mlir
    %y = ds.fused_elementwise %s, %g, %r : (tensor<?x64xf32>, tensor<?x1xf32>, tensor<?x64xf32>) -> tensor<?x64xf32> {
    ^bb0(%a: f32, %b: f32, %c: f32):
      %m = arith.mulf %a, %b : f32
      %t = arith.addf %c, %m : f32
      ds.yield %t : f32
    }
    ```
  }];
  let arguments = (ins Variadic<DS_FloatTensor>:$inputs);
  let results = (outs DS_FloatTensor:$result);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type($inputs, $result) $body
  }];
  let hasVerifier = 1;
  let hasRegionVerifier = 1;
}

def DS_YieldOp : DS_Op<"yield", [Pure, Terminator,
                                 HasParent<"FusedElementwiseOp">]> {
  let summary = "the result element of a ds.fused_elementwise body";
  let description = [{
    ```mlir
    ds.yield %x : f32
    ```
  }];
  let arguments = (ins AnyFloat:$value);
  let assemblyFormat = "$value attr-dict `:` type($value)";
}

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def DS_ConcatWeightsOp : DS_InferOp<"concat_weights"> {
  let summary = "concatenate quantized or sparse weights";
  let description = [{
    `tensor.concat` for weights that are not plain tensors: `!ds.qtensor`s
    with the same storage, expressed type and block, or `!ds.sparse24`s with
    the same element type, joined along `axis`. The stored values, scales,
    zero points and metadata are concatenated as they are, so a block may
    not straddle two inputs: a qtensor's block extent along `axis` must be
    1, or divide every input's size there (never 0, "whole axis"); a 2:4
    weight cannot be joined along its last axis. Horizontal fusion and
    `ds-fuse-moe` use it to merge quantized projections (e.g. DeepSeek-V3's
    FP8 gate and up experts).

    ```mlir
    %gu = ds.concat_weights %g, %u axis 1
        : (!ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>, !ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>)
        -> !ds.qtensor<8x64x64xf8E4M3FN, bf16, block = [1, 32, 32]>
    ```
  }];
  let arguments = (ins Variadic<DS_WeightTensor>:$inputs, I64Attr:$axis);
  let results = (outs DS_WeightTensor:$result);
  let assemblyFormat = [{
    $inputs `axis` $axis attr-dict `:` functional-type($inputs, $result)
  }];
}

def DS_QuantizeOp : DS_InferOp<"quantize"> {
  let summary = "quantize an activation";
  let description = [{
    Quantizes `input` `[..., K]` as `scheme` says (per token, per group of
    channels, or with a static calibrated scale); the result is the
    `!ds.qtensor` `scheme` gives for the input type. A GEMM that takes it
    multiplies quantized values (W8A8, FP8). The interpreter keeps the
    dequantized values, so the rounding error is what it computes with.

    ```mlir
    %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x?x64xf32> -> !ds.qtensor<?x?x64xi8, f32, block = [1, 1, 0]>
    ```
  }];
  let arguments = (ins DS_FloatTensor:$input, DS_ActQuantAttr:$scheme);
  let results = (outs DS_QTensorType:$result);
  let assemblyFormat = [{
    $input attr-dict `:` type($input) `->` qualified(type($result))
  }];
}

def DS_DequantizeOp : DS_InferOp<"dequantize"> {
  let summary = "the float tensor a quantized tensor stands for";
  let description = [{
    `(q - zero_point) * scale` per element, in the expressed type; the
    fallback for ops that cannot consume a `!ds.qtensor` directly.

    ```mlir
    %w = ds.dequantize %q : !ds.qtensor<64x64xi8, f32, block = [1, 0]> -> tensor<64x64xf32>
    ```
  }];
  let arguments = (ins DS_QTensorType:$input);
  let results = (outs DS_FloatTensor:$result);
  let assemblyFormat = [{
    $input attr-dict `:` qualified(type($input)) `->` type($result)
  }];
}

#endif // DS_OPS_TD
