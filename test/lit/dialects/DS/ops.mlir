// RUN: ds-opt %s | ds-opt | FileCheck %s
// RUN: ds-opt %s --mlir-print-op-generic | ds-opt | FileCheck %s

// Round-trip of every ds operation and attribute, in custom and generic form.

// The process grid a sharded param refers to.
// CHECK: shard.grid @grid(shape = 2)
shard.grid @grid(shape = 2)

// CHECK-LABEL: func.func @param
func.func @param() -> (tensor<32x16xbf16>, tensor<4x8x16xf32>) {
  // CHECK: ds.param "model.embed_tokens.weight" : tensor<32x16xbf16>
  %0 = ds.param "model.embed_tokens.weight" : tensor<32x16xbf16>
  // CHECK: ds.param "model.layers.1.mlp.experts.*.gate_proj.weight" : tensor<4x8x16xf32>
  %1 = ds.param "model.layers.1.mlp.experts.*.gate_proj.weight" : tensor<4x8x16xf32>
  // CHECK: ds.param "model.layers.0.self_attn.o_proj.weight" sharded @grid {{\[\[}}], [0]] : tensor<16x8xf32>
  %sharded = ds.param "model.layers.0.self_attn.o_proj.weight" sharded @grid [[], [0]] : tensor<16x8xf32>
  // CHECK: ds.param "model.layers.1.mlp.experts.*.up_proj.weight" select [0, 3] : tensor<2x8x16xf32>
  %2 = ds.param "model.layers.1.mlp.experts.*.up_proj.weight" select [0, 3] : tensor<2x8x16xf32>
  return %0, %1 : tensor<32x16xbf16>, tensor<4x8x16xf32>
}

// CHECK-LABEL: func.func @embedding
func.func @embedding(%table: tensor<32x16xbf16>, %ids: tensor<?x?xi32>) -> tensor<?x?x16xbf16> {
  // CHECK: ds.embedding %{{.*}}[%{{.*}}] : tensor<32x16xbf16>, tensor<?x?xi32> -> tensor<?x?x16xbf16>
  %0 = ds.embedding %table[%ids] : tensor<32x16xbf16>, tensor<?x?xi32> -> tensor<?x?x16xbf16>
  // A process's block of the vocabulary (vocabulary-split embedding).
  // CHECK: ds.embedding %{{.*}}[%{{.*}}] {vocab_grid = @grid, vocab_grid_axes = array<i16: 0>} : tensor<32x16xbf16>, tensor<?x?xi32> -> tensor<?x?x16xbf16>
  %1 = ds.embedding %table[%ids] {vocab_grid = @grid, vocab_grid_axes = array<i16: 0>} : tensor<32x16xbf16>, tensor<?x?xi32> -> tensor<?x?x16xbf16>
  return %1 : tensor<?x?x16xbf16>
}

// CHECK-LABEL: func.func @rms_norm
func.func @rms_norm(%x: tensor<?x?x16xf16>, %w: tensor<16xf16>) -> tensor<?x?x16xf16> {
  // CHECK: ds.rms_norm %{{.*}}, %{{.*}} {epsilon = 9.9999999999999995E-7 : f64} : tensor<?x?x16xf16>, tensor<16xf16>
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-06 : f64} : tensor<?x?x16xf16>, tensor<16xf16>
  return %0 : tensor<?x?x16xf16>
}

// CHECK-LABEL: func.func @linear
func.func @linear(%x: tensor<?x?x16xf32>, %w: tensor<8x16xf32>, %b: tensor<8xf32>) -> (tensor<?x?x8xf32>, tensor<2x3x8xf32>) {
  // CHECK: ds.linear %{{.*}}, %{{.*}} : tensor<?x?x16xf32>, tensor<8x16xf32> -> tensor<?x?x8xf32>
  %0 = ds.linear %x, %w : tensor<?x?x16xf32>, tensor<8x16xf32> -> tensor<?x?x8xf32>
  // A written result type may be more static than the inferred one.
  // CHECK: ds.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<2x3x8xf32>
  %1 = ds.linear %x, %w, %b : tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<2x3x8xf32>
  return %0, %1 : tensor<?x?x8xf32>, tensor<2x3x8xf32>
}

// CHECK-LABEL: func.func @elementwise
func.func @elementwise(%g: tensor<?x8xbf16>, %u: tensor<?x8xbf16>, %s: tensor<?x1xbf16>) -> (tensor<?x8xbf16>, tensor<?x8xbf16>, tensor<?x1xbf16>, tensor<?x8xbf16>) {
  // CHECK: ds.swiglu %{{.*}}, %{{.*}} : tensor<?x8xbf16>
  %0 = ds.swiglu %g, %u : tensor<?x8xbf16>
  // CHECK: ds.swiglu %{{.*}}, %{{.*}} {activation = #ds.activation<gelu_tanh>} : tensor<?x8xbf16>
  %1 = ds.swiglu %g, %u {activation = #ds.activation<gelu_tanh>} : tensor<?x8xbf16>
  // CHECK: ds.activation sigmoid %{{.*}} : tensor<?x1xbf16>
  %2 = ds.activation sigmoid %s : tensor<?x1xbf16>
  // CHECK: ds.mul %{{.*}}, %{{.*}} : tensor<?x8xbf16>, tensor<?x1xbf16> -> tensor<?x8xbf16>
  %3 = ds.mul %0, %2 : tensor<?x8xbf16>, tensor<?x1xbf16> -> tensor<?x8xbf16>
  return %0, %1, %2, %3 : tensor<?x8xbf16>, tensor<?x8xbf16>, tensor<?x1xbf16>, tensor<?x8xbf16>
}

// CHECK-LABEL: func.func @heads_and_split
func.func @heads_and_split(%x: tensor<?x?x48xf32>) -> (tensor<?x?x48xf32>, tensor<?x?x4x8xf32>, tensor<?x?x4x4xf32>) {
  // CHECK: ds.split_heads %{{.*}} into 4 : tensor<?x?x48xf32> -> tensor<?x?x4x12xf32>
  %0 = ds.split_heads %x into 4 : tensor<?x?x48xf32> -> tensor<?x?x4x12xf32>
  // CHECK: ds.split %{{.*}} axis 3 sizes [8, 4] : tensor<?x?x4x12xf32> -> tensor<?x?x4x8xf32>, tensor<?x?x4x4xf32>
  %1:2 = ds.split %0 axis 3 sizes [8, 4] : tensor<?x?x4x12xf32> -> tensor<?x?x4x8xf32>, tensor<?x?x4x4xf32>
  // CHECK: ds.merge_heads %{{.*}} : tensor<?x?x4x12xf32> -> tensor<?x?x48xf32>
  %2 = ds.merge_heads %0 : tensor<?x?x4x12xf32> -> tensor<?x?x48xf32>
  return %2, %1#0, %1#1 : tensor<?x?x48xf32>, tensor<?x?x4x8xf32>, tensor<?x?x4x4xf32>
}

// CHECK-LABEL: func.func @rope
func.func @rope(%q: tensor<?x?x4x16xf32>, %k: tensor<?x?x8xf32>, %pos: tensor<?x?xi64>) -> (tensor<?x?x4x16xf32>, tensor<?x?x8xf32>, tensor<?x?x4x16xf32>) {
  // CHECK: ds.rope %{{.*}}, %{{.*}} {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  %0 = ds.rope %q, %pos {rope = #ds.rope<dim = 16, theta = 1000000.0>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  // CHECK: ds.rope %{{.*}}, %{{.*}} {rope = #ds.rope<dim = 8, style = deinterleave, scaling = yarn, factor = 40.0, original_max_position = 4096, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  %1 = ds.rope %k, %pos {rope = #ds.rope<dim = 8, style = deinterleave, scaling = yarn, factor = 40.0, original_max_position = 4096, mscale = 1.0, mscale_all_dim = 1.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  // Partial rotary dimension, interleaved pairs, linear scaling and every
  // YaRN parameter spelled out.
  // CHECK: ds.rope %{{.*}}, %{{.*}} {rope = #ds.rope<dim = 8, style = interleaved, scaling = linear, factor = 2.0, beta_fast = 16.0, beta_slow = 2.0, attention_factor = 1.5, truncate = false>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  %2 = ds.rope %q, %pos {rope = #ds.rope<dim = 8, theta = 10000.0, style = interleaved, scaling = linear, factor = 2.0, original_max_position = 0, beta_fast = 16.0, beta_slow = 2.0, attention_factor = 1.5, truncate = false>} : tensor<?x?x4x16xf32>, tensor<?x?xi64>
  return %0, %1, %2 : tensor<?x?x4x16xf32>, tensor<?x?x8xf32>, tensor<?x?x4x16xf32>
}

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<?x?x8x16xf32>, %k: tensor<?x?x2x16xf32>, %v: tensor<?x?x2x16xf32>, %pos: tensor<?x?xi64>) -> (tensor<?x?x8x16xf32>, tensor<?x?x8x16xf32>) {
  // CHECK: ds.attention %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {scale = 2.500000e-01 : f64} : tensor<?x?x8x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  %0 = ds.attention %q, %k, %v, %pos {scale = 0.25 : f64} : tensor<?x?x8x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  // CHECK: ds.attention {{.*}} {scale = 2.500000e-01 : f64, sliding_window = 128 : i64}
  %1 = ds.attention %q, %k, %v, %pos {scale = 0.25 : f64, sliding_window = 128 : i64} : tensor<?x?x8x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  return %0, %1 : tensor<?x?x8x16xf32>, tensor<?x?x8x16xf32>
}

// CHECK-LABEL: func.func @mla_attention
func.func @mla_attention(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %ckv: tensor<?x?x32xf32>, %kpe: tensor<?x?x8xf32>, %wkvb: tensor<128x32xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x4x16xf32> {
  // CHECK: ds.mla_attention %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {scale = 2.040000e-01 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %0 = ds.mla_attention %qn, %qp, %ckv, %kpe, %wkvb, %pos {scale = 0.204 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return %0 : tensor<?x?x4x16xf32>
}

// CHECK-LABEL: func.func @cache_update
func.func @cache_update(%cache: tensor<?x64x2x16xf32>, %pos: tensor<?x?xi64>, %k: tensor<?x?x2x16xf32>) -> tensor<?x64x2x16xf32> {
  // CHECK: ds.cache_update %{{.*}}[%{{.*}}], %{{.*}} : tensor<?x64x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %0 = ds.cache_update %cache[%pos], %k : tensor<?x64x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  return %0 : tensor<?x64x2x16xf32>
}

// A narrow (bf16 / f16) KV cache: updates round into it, attention reads it.
// CHECK-LABEL: func.func @narrow_cache
func.func @narrow_cache(%cache: tensor<?x64x2x16xbf16>, %pos: tensor<?x?xi64>, %k: tensor<?x?x2x16xf32>, %q: tensor<?x?x8x16xf32>, %qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %ckv: tensor<?x?x32xf16>, %kpe: tensor<?x?x8xf16>, %wkvb: tensor<128x32xf32>) -> (tensor<?x64x2x16xbf16>, tensor<?x?x8x16xf32>, tensor<?x?x4x16xf32>) {
  // CHECK: ds.cache_update %{{.*}}[%{{.*}}], %{{.*}} : tensor<?x64x2x16xbf16>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %0 = ds.cache_update %cache[%pos], %k : tensor<?x64x2x16xbf16>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  // CHECK: ds.attention {{.*}} : tensor<?x?x8x16xf32>, tensor<?x64x2x16xbf16>, tensor<?x64x2x16xbf16>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  %1 = ds.attention %q, %0, %0, %pos {scale = 0.25 : f64} : tensor<?x?x8x16xf32>, tensor<?x64x2x16xbf16>, tensor<?x64x2x16xbf16>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  // CHECK: ds.mla_attention {{.*}} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf16>, tensor<?x?x8xf16>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %2 = ds.mla_attention %qn, %qp, %ckv, %kpe, %wkvb, %pos {scale = 0.204 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf16>, tensor<?x?x8xf16>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return %0, %1, %2 : tensor<?x64x2x16xbf16>, tensor<?x?x8x16xf32>, tensor<?x?x4x16xf32>
}

// An FP8 (e4m3) KV cache with power-of-two scales: the updates write with
// their kv_scale, attention reads with the same k_scale / v_scale.
// CHECK-LABEL: func.func @fp8_cache
func.func @fp8_cache(%kc: tensor<?x64x2x16xf8E4M3FN>, %vc: tensor<?x64x2x16xf8E4M3FN>, %pos: tensor<?x?xi64>, %k: tensor<?x?x2x16xf32>, %q: tensor<?x?x8x16xf32>, %qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %ckv: tensor<?x?x32xf8E4M3FN>, %kpe: tensor<?x?x8xf8E4M3FN>, %wkvb: tensor<128x32xf32>) -> (tensor<?x?x8x16xf32>, tensor<?x?x4x16xf32>) {
  // CHECK: ds.cache_update %{{.*}}[%{{.*}}], %{{.*}} {kv_scale = 1.250000e-01 : f64} : tensor<?x64x2x16xf8E4M3FN>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %0 = ds.cache_update %kc[%pos], %k {kv_scale = 0.125 : f64} : tensor<?x64x2x16xf8E4M3FN>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %1 = ds.cache_update %vc[%pos], %k {kv_scale = 2.0 : f64} : tensor<?x64x2x16xf8E4M3FN>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  // CHECK: ds.attention {{.*}} {k_scale = 1.250000e-01 : f64, scale = 2.500000e-01 : f64, v_scale = 2.000000e+00 : f64} : tensor<?x?x8x16xf32>, tensor<?x64x2x16xf8E4M3FN>, tensor<?x64x2x16xf8E4M3FN>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  %2 = ds.attention %q, %0, %1, %pos {scale = 0.25 : f64, k_scale = 0.125 : f64, v_scale = 2.0 : f64} : tensor<?x?x8x16xf32>, tensor<?x64x2x16xf8E4M3FN>, tensor<?x64x2x16xf8E4M3FN>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  // CHECK: ds.mla_attention {{.*}} {c_kv_scale = 6.250000e-02 : f64, k_pe_scale = 1.000000e+00 : f64, scale = 2.040000e-01 : f64}
  %3 = ds.mla_attention %qn, %qp, %ckv, %kpe, %wkvb, %pos {scale = 0.204 : f64, c_kv_scale = 0.0625 : f64, k_pe_scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf8E4M3FN>, tensor<?x?x8xf8E4M3FN>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return %2, %3 : tensor<?x?x8x16xf32>, tensor<?x?x4x16xf32>
}

// CHECK-LABEL: func.func @router
func.func @router(%logits: tensor<?x16xf32>, %bias: tensor<16xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x4xf32>, tensor<?x4xi32>) {
  // CHECK: ds.router %{{.*}} {routing = #ds.routing<num_experts = 16, top_k = 2, norm_topk_prob = true>} : tensor<?x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w, %i = ds.router %logits {routing = #ds.routing<num_experts = 16, top_k = 2, norm_topk_prob = true>} : tensor<?x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // CHECK: ds.router %{{.*}} bias %{{.*}} {routing = #ds.routing<num_experts = 16, top_k = 4, scoring = sigmoid, n_group = 4, topk_group = 2, group_score = top2_sum, norm_topk_prob = true, norm_epsilon = 1.0e-20, routed_scaling_factor = 2.5>} : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  %w2, %i2 = ds.router %logits bias %bias {routing = #ds.routing<num_experts = 16, top_k = 4, scoring = sigmoid, n_group = 4, topk_group = 2, group_score = top2_sum, norm_topk_prob = true, norm_epsilon = 1.0e-20, routed_scaling_factor = 2.5>} : tensor<?x16xf32>, tensor<16xf32> -> tensor<?x4xf32>, tensor<?x4xi32>
  // Pruned routing: only experts 1, 4 and 9 can be selected.
  // CHECK: ds.router %{{.*}} {routing = #ds.routing<num_experts = 16, top_k = 2, kept = [1, 4, 9]>}
  %w3, %i3 = ds.router %logits {routing = #ds.routing<num_experts = 16, top_k = 2, kept = [1, 4, 9]>} : tensor<?x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // CHECK: ds.router %{{.*}} {routing = #ds.routing<num_experts = 16, top_k = 2, kept = [1, 4, 9], slots = [0, 2, 1, 0]>}
  %w4, %i4 = ds.router %logits {routing = #ds.routing<num_experts = 16, top_k = 2, kept = [1, 4, 9], slots = [0, 2, 1, 0]>} : tensor<?x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %w, %i, %w2, %i2 : tensor<?x2xf32>, tensor<?x2xi32>, tensor<?x4xf32>, tensor<?x4xi32>
}

// CHECK-LABEL: func.func @moe_steps
func.func @moe_steps(%x: tensor<?x16xf32>, %idx: tensor<?x2xi32>, %w: tensor<?x2xf32>, %wg: tensor<4x8x16xf32>, %wd: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  // CHECK: %[[S:.+]], %[[O:.+]], %[[R:.+]] = ds.moe_dispatch %{{.*}}, %{{.*}} experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  %s, %o, %r = ds.moe_dispatch %x, %idx experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  // CHECK: ds.grouped_matmul %[[S]], %{{.*}}, %[[O]] : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %g = ds.grouped_matmul %s, %wg, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %d = ds.grouped_matmul %g, %wd, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  // CHECK: ds.moe_combine %{{.*}}, %{{.*}}, %[[R]] : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  %y = ds.moe_combine %d, %w, %r : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// CHECK-LABEL: func.func @moe
func.func @moe(%x: tensor<?x?x16xf32>, %wr: tensor<4x16xf32>, %b: tensor<4xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xf32>, %su: tensor<12x16xf32>, %sd: tensor<16x12xf32>, %seg: tensor<1x16xf32>) -> (tensor<?x?x16xf32>, tensor<?x?x16xf32>) {
  // CHECK: ds.moe %{{.*}} router %{{.*}} experts(%{{.*}}, %{{.*}}, %{{.*}}) {routing = #ds.routing<num_experts = 4, top_k = 2, norm_topk_prob = true>} : (tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2, norm_topk_prob = true>} : (tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  // CHECK: ds.moe %{{.*}} router %{{.*}} bias %{{.*}} experts(%{{.*}}, %{{.*}}, %{{.*}}) shared(%{{.*}}, %{{.*}}, %{{.*}}) shared_expert_gate %{{.*}} {activation = #ds.activation<gelu>, routing = #ds.routing<num_experts = 4, top_k = 2, scoring = sigmoid>} : (tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<16x12xf32>, tensor<1x16xf32>) -> tensor<?x?x16xf32>
  %1 = ds.moe %x router %wr bias %b experts(%g, %u, %d) shared(%sg, %su, %sd) shared_expert_gate %seg {activation = #ds.activation<gelu>, routing = #ds.routing<num_experts = 4, top_k = 2, scoring = sigmoid>} : (tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<16x12xf32>, tensor<1x16xf32>) -> tensor<?x?x16xf32>
  // A process's block of the experts (expert parallelism).
  // CHECK: ds.moe %{{.*}} router %{{.*}} experts(%{{.*}}, %{{.*}}, %{{.*}}) {expert_grid = @grid, expert_grid_axes = array<i16: 0>, routing = #ds.routing<num_experts = 8, top_k = 2>} : (tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  %wr8 = ds.param "router8" : tensor<8x16xf32>
  %2 = ds.moe %x router %wr8 experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2>, expert_grid = @grid, expert_grid_axes = array<i16: 0>} : (tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  // The tokens are this process's own: their slots move by all-to-all.
  // CHECK: ds.moe %{{.*}} router %{{.*}} experts(%{{.*}}, %{{.*}}, %{{.*}}) {all_to_all, expert_grid = @grid, expert_grid_axes = array<i16: 0>, routing = #ds.routing<num_experts = 8, top_k = 2>}
  %3 = ds.moe %x router %wr8 experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2>, expert_grid = @grid, expert_grid_axes = array<i16: 0>, all_to_all} : (tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  return %0, %1 : tensor<?x?x16xf32>, tensor<?x?x16xf32>
}

// CHECK-LABEL: func.func @fused_kernels
func.func @fused_kernels(%x: tensor<?x?x16xf32>, %w: tensor<32x16xf32>, %ln: tensor<16xf32>, %b: tensor<32xf32>,
                         %wd: tensor<16x16xf32>, %t: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %rb: tensor<4xf32>,
                         %gu: tensor<4x16x16xf32>, %d: tensor<4x16x8xf32>) -> (tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x16xf32>) {
  // CHECK: ds.fused_linear %{{.*}}, %{{.*}} norm(%{{.*}}) bias(%{{.*}}) {activation = #ds.activation<silu>, gated, norm_epsilon = 9.9999999999999995E-7 : f64} : (tensor<?x?x16xf32>, tensor<32x16xf32>, tensor<16xf32>, tensor<32xf32>) -> tensor<?x?x16xf32>
  %0 = ds.fused_linear %x, %w norm(%ln) bias(%b) {activation = #ds.activation<silu>, gated, norm_epsilon = 1.0e-06 : f64}
      : (tensor<?x?x16xf32>, tensor<32x16xf32>, tensor<16xf32>, tensor<32xf32>) -> tensor<?x?x16xf32>
  // CHECK: ds.fused_linear %{{.*}}, %{{.*}} residual(%{{.*}}) {activation = #ds.activation<relu>} : (tensor<?x?x16xf32>, tensor<16x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  %1 = ds.fused_linear %0, %wd residual(%x) {activation = #ds.activation<relu>} : (tensor<?x?x16xf32>, tensor<16x16xf32>, tensor<?x?x16xf32>) -> tensor<?x?x16xf32>
  // CHECK: ds.fused_router %{{.*}}, %{{.*}} bias %{{.*}} {routing = #ds.routing<num_experts = 4, top_k = 2, scoring = sigmoid>} : tensor<?x16xf32>, tensor<4x16xf32>, tensor<4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %w2, %i2 = ds.fused_router %t, %wr bias %rb {routing = #ds.routing<num_experts = 4, top_k = 2, scoring = sigmoid>} : tensor<?x16xf32>, tensor<4x16xf32>, tensor<4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // CHECK: ds.fused_moe %{{.*}}, %{{.*}}, %{{.*}} experts(%{{.*}}, %{{.*}}) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %y = ds.fused_moe %t, %w2, %i2 experts(%gu, %d) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // A process's block of the experts (expert parallelism).
  // CHECK: ds.fused_moe %{{.*}}, %{{.*}}, %{{.*}} experts(%{{.*}}, %{{.*}}) {expert_grid = @grid, expert_grid_axes = array<i16: 0>} : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  %yb = ds.fused_moe %t, %w2, %i2 experts(%gu, %d) {expert_grid = @grid, expert_grid_axes = array<i16: 0>} : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  // CHECK: ds.fused_moe %{{.*}}, %{{.*}}, %{{.*}} experts(%{{.*}}, %{{.*}}) {all_to_all, expert_grid = @grid, expert_grid_axes = array<i16: 0>}
  %ya = ds.fused_moe %t, %w2, %i2 experts(%gu, %d) {expert_grid = @grid, expert_grid_axes = array<i16: 0>, all_to_all} : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return %0, %1, %y : tensor<?x?x16xf32>, tensor<?x?x16xf32>, tensor<?x16xf32>
}

// CHECK-LABEL: func.func @quantized_params
func.func @quantized_params() {
  // CHECK: ds.param "w:q" scales "w:scale" : !ds.qtensor<32x16xi8, f32, block = [1, 0]>
  %0 = ds.param "w:q" scales "w:scale" : !ds.qtensor<32x16xi8, f32, block = [1, 0]>
  // CHECK: ds.param "g:q" scales "g:scale" zero_points "g:zero" : !ds.qtensor<32x128xui4, bf16, block = [1, 32]>
  %1 = ds.param "g:q" scales "g:scale" zero_points "g:zero" : !ds.qtensor<32x128xui4, bf16, block = [1, 32]>
  // CHECK: ds.param "model.layers.0.mlp.down_proj.weight" scales "model.layers.0.mlp.down_proj.weight_scale_inv" : !ds.qtensor<256x384xf8E4M3FN, bf16, block = [128, 128]>
  %2 = ds.param "model.layers.0.mlp.down_proj.weight" scales "model.layers.0.mlp.down_proj.weight_scale_inv" : !ds.qtensor<256x384xf8E4M3FN, bf16, block = [128, 128]>
  // CHECK: ds.param "e.*.w" select [1, 3] scales "e.*.s" : !ds.qtensor<2x8x16xi4, f32, block = [1, 1, 16]>
  %3 = ds.param "e.*.w" select [1, 3] scales "e.*.s" : !ds.qtensor<2x8x16xi4, f32, block = [1, 1, 16]>
  return
}

// CHECK-LABEL: func.func @quantized_gemms
func.func @quantized_gemms(%x: tensor<?x?x16xf32>, %w: !ds.qtensor<32x16xi8, f32, block = [1, 0]>, %t: tensor<?x16xf32>,
                           %o: tensor<5xi64>, %ge: !ds.qtensor<4x8x16xf8E4M3FN, f32, block = [1, 128, 128]>,
                           %wt: tensor<?x2xf32>, %it: tensor<?x2xi32>, %gu: !ds.qtensor<4x16x16xi8, f32, block = [1, 1, 0]>,
                           %d: !ds.qtensor<4x16x8xi8, f32, block = [1, 1, 0]>, %ln: tensor<16xf32>) {
  // CHECK: %[[Q:.*]] = ds.quantize %{{.*}} {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x?x16xf32> -> !ds.qtensor<?x?x16xi8, f32, block = [1, 1, 0]>
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x?x16xf32> -> !ds.qtensor<?x?x16xi8, f32, block = [1, 1, 0]>
  // CHECK: ds.linear %[[Q]], %{{.*}} : !ds.qtensor<?x?x16xi8, f32, block = [1, 1, 0]>, !ds.qtensor<32x16xi8, f32, block = [1, 0]> -> tensor<?x?x32xf32>
  %y = ds.linear %q, %w : !ds.qtensor<?x?x16xi8, f32, block = [1, 1, 0]>, !ds.qtensor<32x16xi8, f32, block = [1, 0]> -> tensor<?x?x32xf32>
  // CHECK: ds.quantize %{{.*}} {scheme = #ds.act_quant<i8, group = 0, scale = 0.025>} : tensor<?x?x16xf32> -> !ds.qtensor<?x?x16xi8, f32, block = [0, 0, 0]>
  %s = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0, scale = 0.025>} : tensor<?x?x16xf32> -> !ds.qtensor<?x?x16xi8, f32, block = [0, 0, 0]>
  // CHECK: %[[F:.*]] = ds.quantize %{{.*}} {scheme = #ds.act_quant<f8E4M3FN, group = 128>} : tensor<?x16xf32> -> !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>
  %f = ds.quantize %t {scheme = #ds.act_quant<f8E4M3FN, group = 128>} : tensor<?x16xf32> -> !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>
  // CHECK: ds.grouped_matmul %[[F]], %{{.*}}, %{{.*}} : !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>, !ds.qtensor<4x8x16xf8E4M3FN, f32, block = [1, 128, 128]>, tensor<5xi64> -> tensor<?x8xf32>
  %g = ds.grouped_matmul %f, %ge, %o : !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>, !ds.qtensor<4x8x16xf8E4M3FN, f32, block = [1, 128, 128]>, tensor<5xi64> -> tensor<?x8xf32>
  // CHECK: ds.dequantize %{{.*}} : !ds.qtensor<32x16xi8, f32, block = [1, 0]> -> tensor<32x16xf32>
  %dq = ds.dequantize %w : !ds.qtensor<32x16xi8, f32, block = [1, 0]> -> tensor<32x16xf32>
  // CHECK: ds.fused_linear %{{.*}}, %{{.*}} norm(%{{.*}}) {input_quant = #ds.act_quant<i8, group = 0>, norm_epsilon = 9.9999999999999995E-7 : f64} : (tensor<?x?x16xf32>, !ds.qtensor<32x16xi8, f32, block = [1, 0]>, tensor<16xf32>) -> tensor<?x?x32xf32>
  %fl = ds.fused_linear %x, %w norm(%ln) {input_quant = #ds.act_quant<i8, group = 0>, norm_epsilon = 1.0e-06 : f64}
      : (tensor<?x?x16xf32>, !ds.qtensor<32x16xi8, f32, block = [1, 0]>, tensor<16xf32>) -> tensor<?x?x32xf32>
  // CHECK: ds.fused_moe %{{.*}}, %{{.*}}, %{{.*}} experts(%{{.*}}, %{{.*}}) {hidden_quant = #ds.act_quant<i8, group = 0>, input_quant = #ds.act_quant<i8, group = 0>} : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, !ds.qtensor<4x16x16xi8, f32, block = [1, 1, 0]>, !ds.qtensor<4x16x8xi8, f32, block = [1, 1, 0]>) -> tensor<?x16xf32>
  %m = ds.fused_moe %t, %wt, %it experts(%gu, %d) {input_quant = #ds.act_quant<i8, group = 0>, hidden_quant = #ds.act_quant<i8, group = 0>}
      : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, !ds.qtensor<4x16x16xi8, f32, block = [1, 1, 0]>, !ds.qtensor<4x16x8xi8, f32, block = [1, 1, 0]>) -> tensor<?x16xf32>
  return
}

// CHECK-LABEL: func.func @sparse_weights
func.func @sparse_weights(%x: tensor<?x16xf32>) -> tensor<?x8xf32> {
  // CHECK: %[[W:.*]] = ds.param "w:values" meta "w:meta" : !ds.sparse24<8x16xf32>
  %w = ds.param "w:values" meta "w:meta" : !ds.sparse24<8x16xf32>
  // CHECK: ds.param "e.*.v" select [1] meta "e.*.m" : !ds.sparse24<1x8x16xbf16>
  %e = ds.param "e.*.v" select [1] meta "e.*.m" : !ds.sparse24<1x8x16xbf16>
  // CHECK: ds.linear %{{.*}}, %[[W]] : tensor<?x16xf32>, !ds.sparse24<8x16xf32> -> tensor<?x8xf32>
  %y = ds.linear %x, %w : tensor<?x16xf32>, !ds.sparse24<8x16xf32> -> tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// CHECK-LABEL: func.func @fused_elementwise
func.func @fused_elementwise(%x: tensor<?x16xf32>, %g: tensor<?x1xbf16>) -> tensor<?x16xf32> {
  // CHECK: ds.fused_elementwise %{{.*}}, %{{.*}} : (tensor<?x16xf32>, tensor<?x1xbf16>) -> tensor<?x16xf32> {
  // CHECK-NEXT: ^bb0(%[[A:.*]]: f32, %[[B:.*]]: bf16):
  // CHECK-NEXT: %[[E:.*]] = arith.extf %[[B]] : bf16 to f32
  // CHECK-NEXT: %[[M:.*]] = arith.mulf %[[A]], %[[E]] : f32
  // CHECK-NEXT: %[[T:.*]] = math.tanh %[[M]] : f32
  // CHECK-NEXT: ds.yield %[[T]] : f32
  %y = ds.fused_elementwise %x, %g : (tensor<?x16xf32>, tensor<?x1xbf16>) -> tensor<?x16xf32> {
  ^bb0(%a: f32, %b: bf16):
    %e = arith.extf %b : bf16 to f32
    %m = arith.mulf %a, %e : f32
    %t = math.tanh %m : f32
    ds.yield %t : f32
  }
  return %y : tensor<?x16xf32>
}

// CHECK-LABEL: func.func @concat_weights
func.func @concat_weights(%g: !ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>, %u: !ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>,
                          %a: !ds.sparse24<16x8xf32>, %b: !ds.sparse24<8x8xf32>) {
  // CHECK: ds.concat_weights %{{.*}}, %{{.*}} axis 1 : (!ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>, !ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>) -> !ds.qtensor<8x64x64xf8E4M3FN, bf16, block = [1, 32, 32]>
  %gu = ds.concat_weights %g, %u axis 1 : (!ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>, !ds.qtensor<8x32x64xf8E4M3FN, bf16, block = [1, 32, 32]>) -> !ds.qtensor<8x64x64xf8E4M3FN, bf16, block = [1, 32, 32]>
  // CHECK: ds.concat_weights %{{.*}}, %{{.*}} axis 0 : (!ds.sparse24<16x8xf32>, !ds.sparse24<8x8xf32>) -> !ds.sparse24<24x8xf32>
  %ab = ds.concat_weights %a, %b axis 0 : (!ds.sparse24<16x8xf32>, !ds.sparse24<8x8xf32>) -> !ds.sparse24<24x8xf32>
  return
}
