//===- DSEnums.td - ds enumerations -------------------------*- tablegen -*-===//
//
// Enumerations used by ds attributes and ops: router scoring, group scoring,
// activations, and RoPE layout and scaling.
//
//===----------------------------------------------------------------------===//

#ifndef DS_ENUMS_TD
#define DS_ENUMS_TD

include "mlir/IR/EnumAttr.td"

def DS_ScoringFunc : I32EnumAttr<"ScoringFunc",
    "how router logits become expert scores", [
      I32EnumAttrCase<"softmax", 0>,
      I32EnumAttrCase<"sigmoid", 1>
    ]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}

def DS_GroupScore : I32EnumAttr<"GroupScore",
    "how the score of an expert group is computed for grouped top-k", [
      // DeepSeek-V2 group_limited_greedy: the best expert score in the group.
      I32EnumAttrCase<"max", 0>,
      // DeepSeek-V3 noaux_tc: the sum of the two best (biased) scores.
      I32EnumAttrCase<"top2_sum", 1>
    ]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}

def DS_Activation : I32EnumAttr<"Activation", "an elementwise activation", [
      I32EnumAttrCase<"silu", 0>,
      I32EnumAttrCase<"gelu", 1>,
      I32EnumAttrCase<"gelu_tanh", 2>,
      I32EnumAttrCase<"relu", 3>,
      I32EnumAttrCase<"sigmoid", 4>
    ]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}

def DS_RopeStyle : I32EnumAttr<"RopeStyle",
    "which pairs of channels RoPE rotates together", [
      // Mixtral, Qwen: pairs (j, j + d/2); output in the same layout.
      I32EnumAttrCase<"rotate_half", 0>,
      // DeepSeek-V2: adjacent pairs (2j, 2j+1); output stays interleaved.
      I32EnumAttrCase<"interleaved", 1>,
      // DeepSeek-V3 (rope_interleave=true): adjacent pairs, output written
      // de-interleaved as [even rotated..., odd rotated...].
      I32EnumAttrCase<"deinterleave", 2>
    ]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}

def DS_RopeScaling : I32EnumAttr<"RopeScaling",
    "context-extension scaling of the RoPE frequencies", [
      I32EnumAttrCase<"none", 0>,
      I32EnumAttrCase<"linear", 1>,
      I32EnumAttrCase<"yarn", 2>
    ]> {
  let cppNamespace = "::ds";
  let genSpecializedAttr = 0;
}

#endif // DS_ENUMS_TD
