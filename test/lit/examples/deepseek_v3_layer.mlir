// RUN: ds-opt %s | ds-opt | FileCheck %s
// RUN: ds-opt %s --mlir-print-op-generic | ds-opt | FileCheck %s
// RUN: ds-opt %s --ds-decompose-moe | FileCheck %s --check-prefix=DECOMP

// One DeepSeek-V3 decoder layer (layer 3, i.e. past first_k_dense_replace):
// multi-head latent attention with a low-rank query, a compressed KV with its
// RMSNorm, a decoupled RoPE key shared across heads (rope_interleave = true,
// YaRN scaling), then a MoE block with one shared expert and grouped sigmoid
// routing with the score-correction bias. Sizes are a scaled-down V3:
// hidden 64, 4 heads, q_lora_rank 24, kv_lora_rank 32, qk_nope 16, qk_rope 8,
// v_head_dim 16, 8 routed experts in 4 groups (topk_group 2), top-2,
// moe_intermediate 32, routed_scaling_factor 2.5.
//
// Prefill and decode share this function: %pos holds absolute positions and
// the caches hold the normalized latent c_kv and the rotated k_pe.

// CHECK-LABEL: func.func @deepseek_v3_layer
// CHECK: ds.rms_norm
// CHECK: ds.linear {{.*}} -> tensor<?x?x24xf32>
// CHECK: ds.rope {{.*}}style = deinterleave, scaling = yarn
// CHECK: ds.split {{.*}} axis 2 sizes [32, 8]
// CHECK: ds.cache_update
// CHECK: ds.mla_attention {{.*}} -> tensor<?x?x4x16xf32>
// CHECK: ds.moe {{.*}} bias {{.*}} shared(
// CHECK-SAME: group_score = top2_sum
// DECOMP-LABEL: func.func @deepseek_v3_layer
// DECOMP-NOT: ds.moe{{ }}
// DECOMP: ds.router {{.*}} bias
// DECOMP: ds.moe_dispatch
// DECOMP-COUNT-3: ds.grouped_matmul
// DECOMP: ds.moe_combine
// DECOMP: arith.addf
func.func @deepseek_v3_layer(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>,
                             %ckv_cache: tensor<?x128x32xf32>, %kpe_cache: tensor<?x128x8xf32>)
    -> (tensor<?x?x64xf32>, tensor<?x128x32xf32>, tensor<?x128x8xf32>) {
  %ln1 = ds.param "model.layers.3.input_layernorm.weight" : tensor<64xf32>
  %h = ds.rms_norm %x, %ln1 {epsilon = 1.0e-06 : f64} : tensor<?x?x64xf32>, tensor<64xf32>

  // Query: q_b_proj(RMSNorm(q_a_proj(h))), viewed per head as [nope | rope].
  %wqa = ds.param "model.layers.3.self_attn.q_a_proj.weight" : tensor<24x64xf32>
  %qa = ds.linear %h, %wqa : tensor<?x?x64xf32>, tensor<24x64xf32> -> tensor<?x?x24xf32>
  %lnqa = ds.param "model.layers.3.self_attn.q_a_layernorm.weight" : tensor<24xf32>
  %qan = ds.rms_norm %qa, %lnqa {epsilon = 1.0e-06 : f64} : tensor<?x?x24xf32>, tensor<24xf32>
  %wqb = ds.param "model.layers.3.self_attn.q_b_proj.weight" : tensor<96x24xf32>
  %q = ds.linear %qan, %wqb : tensor<?x?x24xf32>, tensor<96x24xf32> -> tensor<?x?x96xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x?x96xf32> -> tensor<?x?x4x24xf32>
  %q_nope, %q_pe = ds.split %qh axis 3 sizes [16, 8] : tensor<?x?x4x24xf32> -> tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>
  %q_rot = ds.rope %q_pe, %pos {rope = #ds.rope<dim = 8, theta = 10000.0, style = deinterleave, scaling = yarn, factor = 40.0, original_max_position = 4096, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x?x4x8xf32>, tensor<?x?xi64>

  // Compressed KV: [latent | shared rope key]; the latent gets its RMSNorm
  // (eps fixed at 1e-6), the rope key one rotation for all heads.
  %wkva = ds.param "model.layers.3.self_attn.kv_a_proj_with_mqa.weight" : tensor<40x64xf32>
  %ckv = ds.linear %h, %wkva : tensor<?x?x64xf32>, tensor<40x64xf32> -> tensor<?x?x40xf32>
  %c, %k_pe = ds.split %ckv axis 2 sizes [32, 8] : tensor<?x?x40xf32> -> tensor<?x?x32xf32>, tensor<?x?x8xf32>
  %lnkv = ds.param "model.layers.3.self_attn.kv_a_layernorm.weight" : tensor<32xf32>
  %cn = ds.rms_norm %c, %lnkv {epsilon = 1.0e-06 : f64} : tensor<?x?x32xf32>, tensor<32xf32>
  %k_rot = ds.rope %k_pe, %pos {rope = #ds.rope<dim = 8, theta = 10000.0, style = deinterleave, scaling = yarn, factor = 40.0, original_max_position = 4096, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>

  // The latent KV cache: write this step's rows, attend over the whole cache.
  %ckv_new = ds.cache_update %ckv_cache[%pos], %cn : tensor<?x128x32xf32>, tensor<?x?xi64>, tensor<?x?x32xf32>
  %kpe_new = ds.cache_update %kpe_cache[%pos], %k_rot : tensor<?x128x8xf32>, tensor<?x?xi64>, tensor<?x?x8xf32>

  // scale = (16 + 8)^-0.5 * mscale(40, 1)^2 = 0.2041241 * 1.3688879^2.
  %wkvb = ds.param "model.layers.3.self_attn.kv_b_proj.weight" : tensor<128x32xf32>
  %attn = ds.mla_attention %q_nope, %q_rot, %ckv_new, %kpe_new, %wkvb, %pos {scale = 0.38250247 : f64}
      : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x128x32xf32>, tensor<?x128x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %attn2 = ds.merge_heads %attn : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %wo = ds.param "model.layers.3.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o = ds.linear %attn2, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %x1 = arith.addf %x, %o : tensor<?x?x64xf32>

  // MoE: sigmoid scores, bias for selection only, 4 groups scored by the sum
  // of their two best experts, 2 groups kept, top-2, renormalized (+1e-20),
  // scaled by 2.5; plus the always-on shared expert.
  %ln2 = ds.param "model.layers.3.post_attention_layernorm.weight" : tensor<64xf32>
  %h2 = ds.rms_norm %x1, %ln2 {epsilon = 1.0e-06 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wr = ds.param "model.layers.3.mlp.gate.weight" : tensor<8x64xf32>
  %bias = ds.param "model.layers.3.mlp.gate.e_score_correction_bias" : tensor<8xf32>
  %wg = ds.param "model.layers.3.mlp.experts.*.gate_proj.weight" : tensor<8x32x64xf32>
  %wu = ds.param "model.layers.3.mlp.experts.*.up_proj.weight" : tensor<8x32x64xf32>
  %wd = ds.param "model.layers.3.mlp.experts.*.down_proj.weight" : tensor<8x64x32xf32>
  %sg = ds.param "model.layers.3.mlp.shared_experts.gate_proj.weight" : tensor<32x64xf32>
  %su = ds.param "model.layers.3.mlp.shared_experts.up_proj.weight" : tensor<32x64xf32>
  %sd = ds.param "model.layers.3.mlp.shared_experts.down_proj.weight" : tensor<64x32xf32>
  %moe = ds.moe %h2 router %wr bias %bias experts(%wg, %wu, %wd) shared(%sg, %su, %sd)
      {routing = #ds.routing<num_experts = 8, top_k = 2, scoring = sigmoid, n_group = 4, topk_group = 2, group_score = top2_sum, norm_topk_prob = true, norm_epsilon = 1.0e-20, routed_scaling_factor = 2.5>}
      : (tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<8xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>, tensor<32x64xf32>, tensor<32x64xf32>, tensor<64x32xf32>) -> tensor<?x?x64xf32>
  %y = arith.addf %x1, %moe : tensor<?x?x64xf32>
  return %y, %ckv_new, %kpe_new : tensor<?x?x64xf32>, tensor<?x128x32xf32>, tensor<?x128x8xf32>
}
