//===- DSAttrs.td - ds attributes ---------------------------*- tablegen -*-===//
//
// Structured attributes that carry model hyper-parameters: `#ds.rope` (RoPE
// frequencies, layout and YaRN scaling) and `#ds.routing` (router scoring and
// top-k selection), plus the enum attribute for activations.
//
//===----------------------------------------------------------------------===//

#ifndef DS_ATTRS_TD
#define DS_ATTRS_TD

include "ds/dialects/DS/IR/DSDialect.td"
include "ds/dialects/DS/IR/DSEnums.td"
include "ds/dialects/DS/IR/DSTypes.td"
include "mlir/IR/AttrTypeBase.td"

//===----------------------------------------------------------------------===//
// Parameter helpers
//===----------------------------------------------------------------------===//

/// An f64 parameter written as a plain float literal (`theta = 10000.0`).
class DS_F64Param<string default, string desc>
    : AttrOrTypeParameter<"::llvm::APFloat", desc> {
  let comparator = "$_lhs.bitwiseIsEqual($_rhs)";
  let parser = "::ds::parseF64Param($_parser)";
  let printer = "::ds::printF64Param($_printer, $_self)";
  let defaultValue = "::llvm::APFloat(double(" # default # "))";
}

/// A bool parameter written as `true` / `false`.
class DS_BoolParam<string default, string desc>
    : AttrOrTypeParameter<"bool", desc> {
  let parser = "::ds::parseBoolParam($_parser)";
  let printer = "$_printer << ($_self ? \"true\" : \"false\")";
  let defaultValue = default;
}

/// An optional list of integers written `[0, 2, 5]`.
class DS_I64ListParam<string desc> : OptionalArrayRefParameter<"int64_t", desc> {
  let parser = "::ds::parseI64ListParam($_parser)";
  let printer = "::ds::printI64ListParam($_printer, $_self)";
}

class DS_DefaultEnumParam<EnumAttrInfo info, string default>
    : EnumParameter<info> {
  let defaultValue = info.cppNamespace # "::" # info.className # "::" # default;
}

class DS_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<DS_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

//===----------------------------------------------------------------------===//
// Enum attributes
//===----------------------------------------------------------------------===//

def DS_ActivationAttr : EnumAttr<DS_Dialect, DS_Activation, "activation"> {
  let assemblyFormat = "`<` $value `>`";
}

//===----------------------------------------------------------------------===//
// #ds.rope
//===----------------------------------------------------------------------===//

def DS_RopeAttr : DS_Attr<"Rope", "rope"> {
  let summary = "rotary position embedding parameters";
  let description = [{
    Everything that determines the rotation `ds.rope` applies, following
    Hugging Face `modeling_rope_utils`:

    * `dim` (required): the rotary dimension `d`; the first `d` channels of
      the last axis are rotated, the rest pass through.
    * `theta`: the base, `inv_freq[j] = theta^(-2j/d)` for `j < d/2`, in f32.
    * `style`: `rotate_half` pairs channel `j` with `j + d/2`;
      `interleaved` pairs `2j` with `2j+1` and keeps that layout;
      `deinterleave` pairs `2j` with `2j+1` and writes the result as
      `[rotated evens, rotated odds]` (DeepSeek-V3's `rope_interleave`).
    * `scaling`: `none`; `linear` (`inv_freq /= factor`); or `yarn` with
      `factor`, `original_max_position` (`L0`), `beta_fast`, `beta_slow`,
      `mscale`, `mscale_all_dim`, `attention_factor` and `truncate`.
      For YaRN, `cos` and `sin` are multiplied by the attention factor:
      `attention_factor` if it is non-zero, else
      `gm(factor, mscale) / gm(factor, mscale_all_dim)` when both are
      non-zero, else `gm(factor, 1)`, with `gm(s, m) = 0.1 m ln(s) + 1`
      (1 when `s <= 1`). The frequency ramp uses
      `cd(r) = d ln(L0 / (2 pi r)) / (2 ln theta)`,
      `low = max(floor(cd(beta_fast)), 0)`,
      `high = min(ceil(cd(beta_slow)), d - 1)` (no floor/ceil when
      `truncate = false`), `ramp = clamp((j - low) / (high - low), 0, 1)`
      and `inv_freq = base / factor * ramp + base * (1 - ramp)`.

    Example:
    ```mlir
    #ds.rope<dim = 64, theta = 10000.0, style = deinterleave, scaling = yarn,
             factor = 40.0, original_max_position = 4096, mscale = 1.0,
             mscale_all_dim = 1.0>
    ```
  }];
  let parameters = (ins
    "int64_t":$dim,
    DS_F64Param<"10000.0", "RoPE base">:$theta,
    DS_DefaultEnumParam<DS_RopeStyle, "rotate_half">:$style,
    DS_DefaultEnumParam<DS_RopeScaling, "none">:$scaling,
    DS_F64Param<"1.0", "frequency scaling factor">:$factor,
    DefaultValuedParameter<"int64_t", "0",
                           "YaRN original_max_position_embeddings">:$original_max_position,
    DS_F64Param<"32.0", "YaRN beta_fast">:$beta_fast,
    DS_F64Param<"1.0", "YaRN beta_slow">:$beta_slow,
    DS_F64Param<"0.0", "YaRN mscale (0: not given)">:$mscale,
    DS_F64Param<"0.0", "YaRN mscale_all_dim (0: not given)">:$mscale_all_dim,
    DS_F64Param<"0.0", "YaRN attention_factor (0: derived)">:$attention_factor,
    DS_BoolParam<"true", "YaRN: floor/ceil the correction range">:$truncate
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The factor applied to cos and sin (1 unless YaRN).
    double getAttentionScaling() const;
    /// The per-pair inverse frequencies (d/2 values), computed in f32 as
    /// Hugging Face does.
    ::llvm::SmallVector<float> computeInvFreq() const;
  }];
}

//===----------------------------------------------------------------------===//
// #ds.routing
//===----------------------------------------------------------------------===//

def DS_RoutingAttr : DS_Attr<"Routing", "routing"> {
  let summary = "how a MoE router scores and selects experts";
  let description = [{
    For router logits `l[N, E]` (computed in f32):

    1. `s = softmax(l)` over the experts, or `s = sigmoid(l)` (`scoring`).
    2. `s' = s + bias` when the router has a score-correction bias
       (DeepSeek-V3 `e_score_correction_bias`); `s'` is used for
       selection only.
    3. If `n_group > 1`: the `E` experts form `n_group` contiguous groups;
       each group's score is the `max` of `s'` in it, or the sum of its two
       largest `s'` (`top2_sum`). Only the `topk_group` best groups stay
       selectable; the others' `s'` become `-inf`.
    4. `idx = topk(s', top_k)` (ties go to the lower expert index);
       `w = s[idx]` (the unbiased scores).
    5. If `norm_topk_prob`: `w /= (sum(w) + norm_epsilon)`.
    6. `w *= routed_scaling_factor`.

    `kept` (pruned experts): when given, only the listed experts (ascending)
    can be selected; the others are masked to `-inf` after step 3, while
    scores, softmax denominators and group scores still use all
    `num_experts` logits. Returned indices then number the kept experts
    (`0 .. |kept| - 1`), which is how many expert weight slices follow.

    `slots` (expert placement, `ds-place-experts`): when given, the expert
    weights are `|slots|` slices and slice `s` holds expert `slots[s]` (in
    the numbering above); an expert may occupy several slots (replicas).
    After step 6 each selected expert `e` of a token is replaced by one of
    its slots, so returned indices number the slots: the `r`-th of `e`'s
    slots in ascending order, with `r = (sum of the token's top_k selected
    experts) mod (number of slots holding e)`. The choice depends on the
    token's own selection only, so every process of a partitioned program
    makes it alike and a token's result does not depend on the batch it is
    in; replicas spread over the tokens that select an expert together with
    different others.

    Presets: Mixtral `<scoring = softmax, top_k = 2, norm_topk_prob = true>`;
    Qwen-MoE softmax with `norm_topk_prob` from the config; DeepSeek-V3
    `<scoring = sigmoid, n_group = 8, topk_group = 4, group_score = top2_sum,
    norm_topk_prob = true, norm_epsilon = 1.0e-20,
    routed_scaling_factor = 2.5>`.
  }];
  let parameters = (ins
    "int64_t":$num_experts,
    "int64_t":$top_k,
    DS_DefaultEnumParam<DS_ScoringFunc, "softmax">:$scoring,
    DefaultValuedParameter<"int64_t", "1", "number of expert groups">:$n_group,
    DefaultValuedParameter<"int64_t", "1", "groups kept">:$topk_group,
    DS_DefaultEnumParam<DS_GroupScore, "max">:$group_score,
    DS_BoolParam<"false", "renormalize the top-k weights">:$norm_topk_prob,
    DS_F64Param<"0.0", "added to the renormalization denominator">:$norm_epsilon,
    DS_F64Param<"1.0", "multiplies the final weights">:$routed_scaling_factor,
    DS_I64ListParam<"experts that can still be selected (after pruning)">:$kept,
    DS_I64ListParam<"the expert each weight slot holds (expert placement)">:$slots
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The number of selectable experts: |kept|, or num_experts.
    int64_t getNumRoutedExperts() const {
      return getKept().empty() ? getNumExperts()
                               : static_cast<int64_t>(getKept().size());
    }
    /// The number of expert weight slices, which returned indices number:
    /// |slots|, or the selectable experts.
    int64_t getNumSlots() const {
      return getSlots().empty() ? getNumRoutedExperts()
                                : static_cast<int64_t>(getSlots().size());
    }
  }];
}

//===----------------------------------------------------------------------===//
// #ds.act_quant
//===----------------------------------------------------------------------===//

def DS_ActQuantAttr : DS_Attr<"ActQuant", "act_quant"> {
  let summary = "how activations are quantized before a GEMM";
  let description = [{
    Symmetric quantization of an activation `[..., K]` to `storage` (`i8`
    or `f8E4M3FN`) along its last axis:

    * `group = 0`: one scale per token (the whole last axis), W8A8 style;
    * `group = g`: one scale per `g` consecutive channels of a token
      (DeepSeek-V3's 1x128 activation groups);
    * `scale > 0`: a static scale from calibration for the whole tensor
      (then `group` must be 0).

    Dynamic scales are `absmax / qmax` of each group (127 for i8, 448 for
    e4m3); values are `x / scale` rounded (nearest-even, clamped / e4m3
    saturating). `ds.quantize` applies it and names the `!ds.qtensor` type
    it gives; fused ops carry it as their `input_quant`.

    ```mlir
    #ds.act_quant<i8, group = 0>
    #ds.act_quant<f8E4M3FN, group = 128>
    #ds.act_quant<i8, group = 0, scale = 0.0123>
    ```
  }];
  let parameters = (ins
    "::mlir::Type":$storage_type,
    "int64_t":$group,
    DS_F64Param<"0.0", "static scale (0: dynamic)">:$scale
  );
  let assemblyFormat = [{
    `<` $storage_type `,` `group` `=` $group (`,` `scale` `=` $scale^)? `>`
  }];
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    bool isStatic() const { return !getScale().isZero(); }
    /// The quantized type of an activation of type `input`.
    ::ds::QTensorType getQuantizedType(::mlir::RankedTensorType input) const;
  }];
}

#endif // DS_ATTRS_TD
