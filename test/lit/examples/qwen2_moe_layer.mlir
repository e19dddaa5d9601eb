// RUN: ds-opt %s | ds-opt | FileCheck %s
// RUN: ds-opt %s --mlir-print-op-generic | ds-opt | FileCheck %s
// RUN: ds-opt %s --ds-decompose-moe | FileCheck %s --check-prefix=DECOMP

// One Qwen2-MoE decoder layer: attention with q/k/v biases (o_proj has none),
// rotate_half RoPE (theta 1e4), then 8 routed experts behind a softmax top-4
// router without renormalization (norm_topk_prob = false), plus a shared
// expert whose output is scaled by sigmoid(x shared_expert_gateᵀ).
// Sizes: hidden 64, 4 heads of 16 (no GQA), moe_intermediate 32,
// shared_expert_intermediate 48.

// CHECK-LABEL: func.func @qwen2_moe_layer
// CHECK-COUNT-3: ds.linear {{.*}}, tensor<{{[0-9]+}}xf32> ->
// CHECK: ds.moe {{.*}} shared({{.*}}) shared_expert_gate
// DECOMP-LABEL: func.func @qwen2_moe_layer
// DECOMP: %[[G:.+]] = ds.linear {{.*}} -> tensor<?x1xf32>
// DECOMP: %[[S:.+]] = ds.activation sigmoid %[[G]]
// DECOMP: ds.mul %{{.*}}, %[[S]] : tensor<?x64xf32>, tensor<?x1xf32> -> tensor<?x64xf32>
func.func @qwen2_moe_layer(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x64xf32> {
  %ln1 = ds.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  %h = ds.rms_norm %x, %ln1 {epsilon = 1.0e-06 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wq = ds.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %bq = ds.param "model.layers.0.self_attn.q_proj.bias" : tensor<64xf32>
  %wk = ds.param "model.layers.0.self_attn.k_proj.weight" : tensor<64x64xf32>
  %bk = ds.param "model.layers.0.self_attn.k_proj.bias" : tensor<64xf32>
  %wv = ds.param "model.layers.0.self_attn.v_proj.weight" : tensor<64x64xf32>
  %bv = ds.param "model.layers.0.self_attn.v_proj.bias" : tensor<64xf32>
  %q = ds.linear %h, %wq, %bq : tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x?x64xf32>
  %k = ds.linear %h, %wk, %bk : tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x?x64xf32>
  %v = ds.linear %h, %wv, %bv : tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x?x64xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh = ds.split_heads %k into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %vh = ds.split_heads %v into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %qr = ds.rope %qh, %pos {rope = #ds.rope<dim = 16, theta = 10000.0>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  %kr = ds.rope %kh, %pos {rope = #ds.rope<dim = 16, theta = 10000.0>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  %a = ds.attention %qr, %kr, %vh, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x16xf32>, tensor<?x?x4x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %am = ds.merge_heads %a : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %wo = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o = ds.linear %am, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %x1 = arith.addf %x, %o : tensor<?x?x64xf32>
  %ln2 = ds.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
  %h2 = ds.rms_norm %x1, %ln2 {epsilon = 1.0e-06 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wr = ds.param "model.layers.0.mlp.gate.weight" : tensor<8x64xf32>
  %wg = ds.param "model.layers.0.mlp.experts.*.gate_proj.weight" : tensor<8x32x64xf32>
  %wu = ds.param "model.layers.0.mlp.experts.*.up_proj.weight" : tensor<8x32x64xf32>
  %wd = ds.param "model.layers.0.mlp.experts.*.down_proj.weight" : tensor<8x64x32xf32>
  %sg = ds.param "model.layers.0.mlp.shared_expert.gate_proj.weight" : tensor<48x64xf32>
  %su = ds.param "model.layers.0.mlp.shared_expert.up_proj.weight" : tensor<48x64xf32>
  %sd = ds.param "model.layers.0.mlp.shared_expert.down_proj.weight" : tensor<64x48xf32>
  %seg = ds.param "model.layers.0.mlp.shared_expert_gate.weight" : tensor<1x64xf32>
  %moe = ds.moe %h2 router %wr experts(%wg, %wu, %wd) shared(%sg, %su, %sd) shared_expert_gate %seg
      {routing = #ds.routing<num_experts = 8, top_k = 4>}
      : (tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>, tensor<48x64xf32>, tensor<48x64xf32>, tensor<64x48xf32>, tensor<1x64xf32>) -> tensor<?x?x64xf32>
  %y = arith.addf %x1, %moe : tensor<?x?x64xf32>
  return %y : tensor<?x?x64xf32>
}
