// RUN: ds-opt %s | ds-opt | FileCheck %s
// RUN: ds-opt %s --mlir-print-op-generic | ds-opt | FileCheck %s
// RUN: ds-opt %s --ds-decompose-moe | FileCheck %s --check-prefix=DECOMP

// One Mixtral decoder layer: GQA attention (4 query heads over 2 KV heads)
// with rotate_half RoPE (theta 1e6), then 8 SwiGLU experts behind a softmax
// top-2 router that renormalizes the two weights; no shared expert.
// Sizes: hidden 64, head_dim 16, expert intermediate 32.

// CHECK-LABEL: func.func @mixtral_prefill
// CHECK: ds.attention {{.*}} : tensor<?x?x4x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
// CHECK: ds.moe {{.*}} {routing = #ds.routing<num_experts = 8, top_k = 2, norm_topk_prob = true>}
// DECOMP-LABEL: func.func @mixtral_prefill
// DECOMP: ds.router {{.*}}num_experts = 8, top_k = 2, norm_topk_prob = true
// DECOMP-NOT: arith.addf {{.*}} : tensor<?x64xf32>
// DECOMP: tensor.expand_shape
func.func @mixtral_prefill(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x64xf32> {
  %ln1 = ds.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  %h = ds.rms_norm %x, %ln1 {epsilon = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wq = ds.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wk = ds.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
  %wv = ds.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
  %q = ds.linear %h, %wq : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %k = ds.linear %h, %wk : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %v = ds.linear %h, %wv : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh = ds.split_heads %k into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %vh = ds.split_heads %v into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %qr = ds.rope %qh, %pos {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  %kr = ds.rope %kh, %pos {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x?x2x16xf32>, tensor<?x?xi64>
  // Prefill: the keys are this call's tokens; positions 0..S-1 make it causal.
  %a = ds.attention %qr, %kr, %vh, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %am = ds.merge_heads %a : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %wo = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o = ds.linear %am, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %x1 = arith.addf %x, %o : tensor<?x?x64xf32>
  %ln2 = ds.param "model.layers.0.post_attention_layernorm.weight" : tensor<64xf32>
  %h2 = ds.rms_norm %x1, %ln2 {epsilon = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  // Per-expert checkpoint tensors w1 (gate), w3 (up), w2 (down), stacked by '*'.
  %wr = ds.param "model.layers.0.block_sparse_moe.gate.weight" : tensor<8x64xf32>
  %w1 = ds.param "model.layers.0.block_sparse_moe.experts.*.w1.weight" : tensor<8x32x64xf32>
  %w3 = ds.param "model.layers.0.block_sparse_moe.experts.*.w3.weight" : tensor<8x32x64xf32>
  %w2 = ds.param "model.layers.0.block_sparse_moe.experts.*.w2.weight" : tensor<8x64x32xf32>
  %moe = ds.moe %h2 router %wr experts(%w1, %w3, %w2)
      {routing = #ds.routing<num_experts = 8, top_k = 2, norm_topk_prob = true>}
      : (tensor<?x?x64xf32>, tensor<8x64xf32>, tensor<8x32x64xf32>, tensor<8x32x64xf32>, tensor<8x64x32xf32>) -> tensor<?x?x64xf32>
  %y = arith.addf %x1, %moe : tensor<?x?x64xf32>
  return %y : tensor<?x?x64xf32>
}

// Decode: one new token per sequence; post-RoPE K and V are written into the
// per-layer caches [B, 256, 2, 16] at each sequence's position, and attention
// reads the whole cache (rows past the position are masked).
// CHECK-LABEL: func.func @mixtral_attention_decode
// CHECK: ds.cache_update {{.*}} : tensor<?x256x2x16xf32>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
// CHECK: ds.attention {{.*}} : tensor<?x1x4x16xf32>, tensor<?x256x2x16xf32>, tensor<?x256x2x16xf32>, tensor<?x1xi64> -> tensor<?x1x4x16xf32>
func.func @mixtral_attention_decode(%h: tensor<?x1x64xf32>, %pos: tensor<?x1xi64>,
                                    %kc: tensor<?x256x2x16xf32>, %vc: tensor<?x256x2x16xf32>)
    -> (tensor<?x1x64xf32>, tensor<?x256x2x16xf32>, tensor<?x256x2x16xf32>) {
  %wq = ds.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wk = ds.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
  %wv = ds.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
  %q = ds.linear %h, %wq : tensor<?x1x64xf32>, tensor<64x64xf32> -> tensor<?x1x64xf32>
  %k = ds.linear %h, %wk : tensor<?x1x64xf32>, tensor<32x64xf32> -> tensor<?x1x32xf32>
  %v = ds.linear %h, %wv : tensor<?x1x64xf32>, tensor<32x64xf32> -> tensor<?x1x32xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x1x64xf32> -> tensor<?x1x4x16xf32>
  %kh = ds.split_heads %k into 2 : tensor<?x1x32xf32> -> tensor<?x1x2x16xf32>
  %vh = ds.split_heads %v into 2 : tensor<?x1x32xf32> -> tensor<?x1x2x16xf32>
  %qr = ds.rope %qh, %pos {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x1x4x16xf32>, tensor<?x1xi64>
  %kr = ds.rope %kh, %pos {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x1x2x16xf32>, tensor<?x1xi64>
  %kc2 = ds.cache_update %kc[%pos], %kr : tensor<?x256x2x16xf32>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
  %vc2 = ds.cache_update %vc[%pos], %vh : tensor<?x256x2x16xf32>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
  %a = ds.attention %qr, %kc2, %vc2, %pos {scale = 0.25 : f64} : tensor<?x1x4x16xf32>, tensor<?x256x2x16xf32>, tensor<?x256x2x16xf32>, tensor<?x1xi64> -> tensor<?x1x4x16xf32>
  %am = ds.merge_heads %a : tensor<?x1x4x16xf32> -> tensor<?x1x64xf32>
  %wo = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o = ds.linear %am, %wo : tensor<?x1x64xf32>, tensor<64x64xf32> -> tensor<?x1x64xf32>
  return %o, %kc2, %vc2 : tensor<?x1x64xf32>, tensor<?x256x2x16xf32>, tensor<?x256x2x16xf32>
}
