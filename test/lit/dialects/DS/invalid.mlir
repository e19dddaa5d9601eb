// RUN: ds-opt %s -split-input-file -verify-diagnostics

// Every verifier and shape-inference error of the ds dialect, one case each.
// A weight needs a name.
func.func @case0() {
  // expected-error @+1 {{needs a non-empty weight name}}
  %0 = ds.param "" : tensor<4xf32>
  return
}

// -----

// Weights have static shapes.
func.func @case1() {
  // expected-error @+1 {{weight type must have a static shape}}
  %0 = ds.param "w" : tensor<?x4xf32>
  return
}

// -----

// Weights are floats or integers.
func.func @case2() {
  // expected-error @+1 {{weight element type must be a float or integer}}
  %0 = ds.param "w" : tensor<4xcomplex<f32>>
  return
}

// -----

// At most one expert placeholder.
func.func @case3() {
  // expected-error @+1 {{at most one '*' expert placeholder}}
  %0 = ds.param "experts.*.w.*" : tensor<4x4x4xf32>
  return
}

// -----

// Stacked weights have an expert axis.
func.func @case4() {
  // expected-error @+1 {{needs a leading expert dimension and rank >= 2}}
  %0 = ds.param "experts.*.bias" : tensor<4xf32>
  return
}

// -----

// The table is [V, H].
func.func @case5(%t: tensor<4xf32>, %ids: tensor<?xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.embedding' op table must have rank 2}}
  %0 = ds.embedding %t[%ids] : tensor<4xf32>, tensor<?xi32> -> tensor<?x4xf32>
  return
}

// -----

// The table holds floats.
func.func @case6(%t: tensor<8x4xi8>, %ids: tensor<?xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.embedding' op table must have a floating-point element type}}
  %0 = ds.embedding %t[%ids] : tensor<8x4xi8>, tensor<?xi32> -> tensor<?x4xf32>
  return
}

// -----

// The result is ids.shape + [H].
func.func @case7(%t: tensor<8x4xf32>, %ids: tensor<?xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.embedding' op inferred type(s) 'tensor<?x4xf32>' are incompatible with return type(s) of operation 'tensor<?x5xf32>'}}
  %0 = ds.embedding %t[%ids] : tensor<8x4xf32>, tensor<?xi32> -> tensor<?x5xf32>
  return
}

// -----

// RMSNorm needs a last axis.
func.func @case8(%x: tensor<f32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'ds.rms_norm' op input must have rank at least 1}}
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-6 : f64} : tensor<f32>, tensor<4xf32>
  return
}

// -----

// The norm weight is a vector.
func.func @case9(%x: tensor<?x4xf32>, %w: tensor<1x4xf32>) {
  // expected-error @+1 {{'ds.rms_norm' op weight must have rank 1}}
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-6 : f64} : tensor<?x4xf32>, tensor<1x4xf32>
  return
}

// -----

// The norm weight holds floats.
func.func @case10(%x: tensor<?x4xf32>, %w: tensor<4xi32>) {
  // expected-error @+1 {{'ds.rms_norm' op weight must have a floating-point element type}}
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-6 : f64} : tensor<?x4xf32>, tensor<4xi32>
  return
}

// -----

// The norm weight matches the last axis.
func.func @case11(%x: tensor<?x4xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'ds.rms_norm' op weight dimension 0 (8) does not match input dimension 1 (4)}}
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-6 : f64} : tensor<?x4xf32>, tensor<8xf32>
  return
}

// -----

// Epsilon is positive.
func.func @case12(%x: tensor<?x4xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'ds.rms_norm' op epsilon must be positive}}
  %0 = ds.rms_norm %x, %w {epsilon = 0.0 : f64} : tensor<?x4xf32>, tensor<4xf32>
  return
}

// -----

// Linear needs a feature axis.
func.func @case13(%x: tensor<f32>, %w: tensor<8x4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op input must have rank at least 1}}
  %0 = ds.linear %x, %w : tensor<f32>, tensor<8x4xf32> -> tensor<8xf32>
  return
}

// -----

// The linear weight is [N, K].
func.func @case14(%x: tensor<?x4xf32>, %w: tensor<4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op weight must have rank 2}}
  %0 = ds.linear %x, %w : tensor<?x4xf32>, tensor<4xf32> -> tensor<?x4xf32>
  return
}

// -----

// The linear weight holds floats (quantized types come later).
func.func @case15(%x: tensor<?x4xf32>, %w: tensor<8x4xi8>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op weight must have a floating-point element type}}
  %0 = ds.linear %x, %w : tensor<?x4xf32>, tensor<8x4xi8> -> tensor<?x8xf32>
  return
}

// -----

// K must agree.
func.func @case16(%x: tensor<?x4xf32>, %w: tensor<8x5xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op weight dimension 1 (5) does not match input dimension 1 (4)}}
  %0 = ds.linear %x, %w : tensor<?x4xf32>, tensor<8x5xf32> -> tensor<?x8xf32>
  return
}

// -----

// The bias is a vector.
func.func @case17(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>, %b: tensor<1x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op bias must have rank 1}}
  %0 = ds.linear %x, %w, %b : tensor<?x4xf32>, tensor<8x4xf32>, tensor<1x8xf32> -> tensor<?x8xf32>
  return
}

// -----

// The bias holds floats.
func.func @case18(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>, %b: tensor<8xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op bias must have a floating-point element type}}
  %0 = ds.linear %x, %w, %b : tensor<?x4xf32>, tensor<8x4xf32>, tensor<8xi32> -> tensor<?x8xf32>
  return
}

// -----

// The bias has N entries.
func.func @case19(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op bias dimension 0 (4) does not match weight dimension 0 (8)}}
  %0 = ds.linear %x, %w, %b : tensor<?x4xf32>, tensor<8x4xf32>, tensor<4xf32> -> tensor<?x8xf32>
  return
}

// -----

// A written result must be compatible with the inferred one.
func.func @case20(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.linear' op inferred type(s) 'tensor<?x8xf32>' are incompatible with return type(s) of operation 'tensor<?x8xf16>'}}
  %0 = ds.linear %x, %w : tensor<?x4xf32>, tensor<8x4xf32> -> tensor<?x8xf16>
  return
}

// -----

// Gate and up share a shape.
func.func @case21(%g: tensor<?x4xf32>, %u: tensor<?x8xf32>) {
  // expected-error @+1 {{'ds.swiglu' op failed to verify that all of {gate, up} have same type}}
  %0 = "ds.swiglu"(%g, %u) : (tensor<?x4xf32>, tensor<?x8xf32>) -> tensor<?x4xf32>
  return
}

// -----

// Unknown activations are rejected.
func.func @case22(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{unknown activation 'swish'}}
  %0 = ds.activation swish %x : tensor<?x4xf32>
  return
}

// -----

// Mul operands share an element type.
func.func @case23(%a: tensor<?x4xf32>, %b: tensor<?x1xf16>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mul' op lhs and rhs must have the same element type}}
  %0 = ds.mul %a, %b : tensor<?x4xf32>, tensor<?x1xf16> -> tensor<?x4xf32>
  return
}

// -----

// Mul operands share a rank.
func.func @case24(%a: tensor<?x4xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mul' op operands must have the same rank}}
  %0 = ds.mul %a, %b : tensor<?x4xf32>, tensor<4xf32> -> tensor<?x4xf32>
  return
}

// -----

// Only size-1 axes broadcast.
func.func @case25(%a: tensor<?x4xf32>, %b: tensor<?x3xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mul' op dimension 1 cannot broadcast: 4 vs 3}}
  %0 = ds.mul %a, %b : tensor<?x4xf32>, tensor<?x3xf32> -> tensor<?x4xf32>
  return
}

// -----

// split_heads needs a last axis.
func.func @case26(%x: tensor<f32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split_heads' op input must have rank at least 1}}
  %0 = ds.split_heads %x into 2 : tensor<f32> -> tensor<2x1xf32>
  return
}

// -----

// Heads divide the last axis.
func.func @case27(%x: tensor<?x10xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split_heads' op last dimension 10 is not divisible by 4 heads}}
  %0 = ds.split_heads %x into 4 : tensor<?x10xf32> -> tensor<?x4x2xf32>
  return
}

// -----

// Head counts are positive.
func.func @case28(%x: tensor<?x8xf32>) {
  // expected-error @+1 {{attribute 'num_heads' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %0 = ds.split_heads %x into 0 : tensor<?x8xf32> -> tensor<?x0x8xf32>
  return
}

// -----

// merge_heads needs [heads, head_dim].
func.func @case29(%x: tensor<8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.merge_heads' op input must have rank at least 2}}
  %0 = ds.merge_heads %x : tensor<8xf32> -> tensor<8xf32>
  return
}

// -----

// The split axis exists.
func.func @case30(%x: tensor<?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split' op axis 2 is out of range}}
  %0:2 = ds.split %x axis 2 sizes [4, 4] : tensor<?x8xf32> -> tensor<?x4xf32>, tensor<?x4xf32>
  return
}

// -----

// Split needs sizes.
func.func @case31(%x: tensor<?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split' op needs at least one size}}
  %0 = "ds.split"(%x) <{axis = 1 : i64, sizes = array<i64>}> : (tensor<?x8xf32>) -> tensor<?x8xf32>
  return
}

// -----

// Split sizes are positive.
func.func @case32(%x: tensor<?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split' op sizes must be positive, got 0}}
  %0:2 = ds.split %x axis 1 sizes [8, 0] : tensor<?x8xf32> -> tensor<?x8xf32>, tensor<?x0xf32>
  return
}

// -----

// Split sizes cover the axis.
func.func @case33(%x: tensor<?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.split' op sizes add up to 6 but axis 1 has size 8}}
  %0:2 = ds.split %x axis 1 sizes [4, 2] : tensor<?x8xf32> -> tensor<?x4xf32>, tensor<?x2xf32>
  return
}

// -----

// RoPE takes [B, S, D] or [B, S, H, D].
func.func @case34(%x: tensor<?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.rope' op input must be [B, S, D] or [B, S, heads, D]}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8>} : tensor<?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// Positions are [B, S].
func.func @case35(%x: tensor<?x?x8xf32>, %p: tensor<?xi64>) {
  // expected-error @+1 {{'ds.rope' op positions must have rank 2}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8>} : tensor<?x?x8xf32>, tensor<?xi64>
  return
}

// -----

// Positions match the input's [B, S].
func.func @case36(%x: tensor<2x5x8xf32>, %p: tensor<2x3xi64>) {
  // expected-error @+1 {{'ds.rope' op positions dimension 1 (3) does not match input dimension 1 (5)}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8>} : tensor<2x5x8xf32>, tensor<2x3xi64>
  return
}

// -----

// The rotary dim fits in the head.
func.func @case37(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.rope' op rope dim 16 exceeds the head dimension 8}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 16>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// RoPE needs its parameters.
func.func @case38(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.rope' op requires attribute 'rope'}}
  %0 = ds.rope %x, %p : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// The rotary dim is even.
func.func @case39(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{rope dim must be positive and even, got 7}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 7>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// The base exceeds 1.
func.func @case40(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{rope theta must be greater than 1}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, theta = 1.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// Scaling factors are positive.
func.func @case41(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{rope factor must be positive}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, scaling = linear, factor = 0.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// YaRN needs the original context length.
func.func @case42(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{yarn scaling needs a positive original_max_position}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, scaling = yarn, factor = 4.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// YaRN betas are positive.
func.func @case43(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{yarn beta_fast and beta_slow must be positive}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, scaling = yarn, factor = 4.0, original_max_position = 64, beta_slow = 0.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// The attention factor is not negative.
func.func @case44(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{rope attention_factor must not be negative}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, attention_factor = -1.0>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// Bool parameters are true or false.
func.func @case45(%x: tensor<?x?x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{expected 'true' or 'false'}}
  // expected-error @+1 {{failed to parse DS_RopeAttr parameter 'truncate'}}
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = 8, truncate = 1>} : tensor<?x?x8xf32>, tensor<?x?xi64>
  return
}

// -----

// q is [B, S, Hq, D].
func.func @case46(%q: tensor<?x4x8xf32>, %k: tensor<?x?x2x8xf32>, %v: tensor<?x?x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op q must have rank 4}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<?x4x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// k and v share an element type (q's or a narrower cache's).
func.func @case47(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x2x8xf16>, %v: tensor<?x?x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op k and v must have the same element type}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<?x?x4x8xf32>, tensor<?x?x2x8xf16>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// Keys and values have the same length.
func.func @case48(%q: tensor<?x?x4x8xf32>, %k: tensor<?x32x2x8xf32>, %v: tensor<?x16x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op v dimension 1 (16) does not match k dimension 1 (32)}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<?x?x4x8xf32>, tensor<?x32x2x8xf32>, tensor<?x16x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// q and k have the same head dim.
func.func @case49(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x2x4xf32>, %v: tensor<?x?x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op k dimension 3 (4) does not match q dimension 3 (8)}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<?x?x4x8xf32>, tensor<?x?x2x4xf32>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// GQA needs Hq to be a multiple of Hkv.
func.func @case50(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x3x8xf32>, %v: tensor<?x?x3x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op query heads (4) must be a multiple of key/value heads (3)}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<?x?x4x8xf32>, tensor<?x?x3x8xf32>, tensor<?x?x3x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// Positions match q's [B, S].
func.func @case51(%q: tensor<2x?x4x8xf32>, %k: tensor<?x?x2x8xf32>, %v: tensor<?x?x2x8xf32>, %p: tensor<3x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.attention' op positions dimension 0 (3) does not match q dimension 0 (2)}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<2x?x4x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?x2x8xf32>, tensor<3x?xi64> -> tensor<2x?x4x8xf32>
  return
}

// -----

// The softmax scale is positive.
func.func @case52(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x2x8xf32>, %v: tensor<?x?x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.attention' op scale must be positive}}
  %0 = ds.attention %q, %k, %v, %p {scale = 0.0 : f64} : tensor<?x?x4x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// Sliding windows are positive.
func.func @case53(%q: tensor<?x?x4x8xf32>, %k: tensor<?x?x2x8xf32>, %v: tensor<?x?x2x8xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{attribute 'sliding_window' failed to satisfy constraint}}
  %0 = ds.attention %q, %k, %v, %p {scale = 1.0 : f64, sliding_window = 0 : i64} : tensor<?x?x4x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  return
}

// -----

// The latent is [B, T, c].
func.func @case54(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x1x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op c_kv must have rank 3}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x1x32xf32>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// The RoPE key width matches q_pe.
func.func @case55(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x4xf32>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op k_pe dimension 2 (4) does not match q_pe dimension 3 (8)}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x4xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// kv_b reads the latent.
func.func @case56(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<128x16xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op kv_b dimension 1 (16) does not match c_kv dimension 2 (32)}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<128x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// kv_b rows are heads x (nope + v).
func.func @case57(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<60x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op kv_b rows (60) must be heads (4) x (qk_nope_head_dim (16) + v_head_dim)}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<60x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// Heads must be static to split kv_b.
func.func @case58(%qn: tensor<?x?x?x16xf32>, %qp: tensor<?x?x?x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op q_nope must have static heads and head dims}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x?x16xf32>, tensor<?x?x?x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// The MLA scale is positive.
func.func @case59(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.mla_attention' op scale must be positive}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = -1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf32>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// A cache is at least [B, T].
func.func @case60(%c: tensor<8xf32>, %p: tensor<?x?xi64>, %u: tensor<8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op cache must have rank at least 2}}
  %0 = ds.cache_update %c[%p], %u : tensor<8xf32>, tensor<?x?xi64>, tensor<8xf32>
  return
}

// -----

// Updates have the cache's rank.
func.func @case61(%c: tensor<?x64x2x8xf32>, %p: tensor<?x?xi64>, %u: tensor<?x?x16xf32>) {
  // expected-error @+1 {{'ds.cache_update' op update must have the cache's rank 4}}
  %0 = ds.cache_update %c[%p], %u : tensor<?x64x2x8xf32>, tensor<?x?xi64>, tensor<?x?x16xf32>
  return
}

// -----

// MLA's latents and rope keys share an element type (a narrow cache's).
func.func @case62(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xbf16>, %kp: tensor<?x?x8xf32>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.mla_attention' op c_kv and k_pe must have the same element type}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xbf16>, tensor<?x?x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// Updates have the cache's row shape.
func.func @case63(%c: tensor<?x64x2x8xf32>, %p: tensor<?x?xi64>, %u: tensor<?x?x4x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op update dimension 2 (4) does not match cache dimension 2 (2)}}
  %0 = ds.cache_update %c[%p], %u : tensor<?x64x2x8xf32>, tensor<?x?xi64>, tensor<?x?x4x8xf32>
  return
}

// -----

// Cache and update agree on the batch.
func.func @case64(%c: tensor<2x64x8xf32>, %p: tensor<3x1xi64>, %u: tensor<3x1x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op update dimension 0 (3) does not match cache dimension 0 (2)}}
  %0 = ds.cache_update %c[%p], %u : tensor<2x64x8xf32>, tensor<3x1xi64>, tensor<3x1x8xf32>
  return
}

// -----

// An e4m3 cache needs its scale.
func.func @case64a(%c: tensor<?x64x8xf8E4M3FN>, %p: tensor<?x1xi64>, %u: tensor<?x1x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op an f8E4M3FN cache needs its kv_scale}}
  %0 = ds.cache_update %c[%p], %u : tensor<?x64x8xf8E4M3FN>, tensor<?x1xi64>, tensor<?x1x8xf32>
  return
}

// -----

// Only e4m3 caches have a scale.
func.func @case64b(%c: tensor<?x64x8xbf16>, %p: tensor<?x1xi64>, %u: tensor<?x1x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op kv_scale is for f8E4M3FN caches only; this one is 'bf16'}}
  %0 = ds.cache_update %c[%p], %u {kv_scale = 1.0 : f64} : tensor<?x64x8xbf16>, tensor<?x1xi64>, tensor<?x1x8xf32>
  return
}

// -----

// Scales are powers of two (exact scaling).
func.func @case64c(%c: tensor<?x64x8xf8E4M3FN>, %p: tensor<?x1xi64>, %u: tensor<?x1x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op kv_scale must be a positive power of two, got 3.000000e-01}}
  %0 = ds.cache_update %c[%p], %u {kv_scale = 0.3 : f64} : tensor<?x64x8xf8E4M3FN>, tensor<?x1xi64>, tensor<?x1x8xf32>
  return
}

// -----

// 8-bit caches are e4m3fn.
func.func @case64d(%c: tensor<?x64x8xf8E5M2>, %p: tensor<?x1xi64>, %u: tensor<?x1x8xf32>) {
  // expected-error @+1 {{'ds.cache_update' op KV caches of 8-bit floats are f8E4M3FN, not 'f8E5M2'}}
  %0 = ds.cache_update %c[%p], %u : tensor<?x64x8xf8E5M2>, tensor<?x1xi64>, tensor<?x1x8xf32>
  return
}

// -----

// Attention reads an e4m3 cache with the scale it was written with.
func.func @case64e(%q: tensor<?x1x2x8xf32>, %c: tensor<?x64x1x8xf8E4M3FN>, %p: tensor<?x1xi64>, %u: tensor<?x1x1x8xf32>) {
  %k = ds.cache_update %c[%p], %u {kv_scale = 0.5 : f64} : tensor<?x64x1x8xf8E4M3FN>, tensor<?x1xi64>, tensor<?x1x1x8xf32>
  // expected-error @+1 {{'ds.attention' op k_scale 2.500000e-01 differs from the kv_scale 5.000000e-01 its cache was written with}}
  %o = ds.attention %q, %k, %k, %p {scale = 1.0 : f64, k_scale = 0.25 : f64, v_scale = 0.5 : f64} : tensor<?x1x2x8xf32>, tensor<?x64x1x8xf8E4M3FN>, tensor<?x64x1x8xf8E4M3FN>, tensor<?x1xi64> -> tensor<?x1x2x8xf32>
  return
}

// -----

// MLA's e4m3 latents need their scales.
func.func @case64f(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf8E4M3FN>, %kp: tensor<?x?x8xf8E4M3FN>, %w: tensor<128x32xf32>, %p: tensor<?x?xi64>) {
  // expected-error @+1 {{'ds.mla_attention' op an f8E4M3FN cache needs its k_pe_scale}}
  %0 = ds.mla_attention %qn, %qp, %c, %kp, %w, %p {scale = 1.0 : f64, c_kv_scale = 1.0 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x?x32xf8E4M3FN>, tensor<?x?x8xf8E4M3FN>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return
}

// -----

// Router logits are [N, E].
func.func @case65(%l: tensor<?x?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.router' op logits must have rank 2}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Logits cover every expert.
func.func @case66(%l: tensor<?x6xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.router' op logits have 6 experts but the routing has 8}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x6xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The correction bias is a vector.
func.func @case67(%l: tensor<?x8xf32>, %b: tensor<1x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.router' op bias must have rank 1}}
  %w, %i = ds.router %l bias %b {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32>, tensor<1x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The correction bias has one entry per expert.
func.func @case68(%l: tensor<?x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.router' op bias has 4 entries but the routing has 8 experts}}
  %w, %i = ds.router %l bias %b {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32>, tensor<4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The router returns [N, top_k] weights and indices.
func.func @case69(%l: tensor<?x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.router' op inferred type(s) 'tensor<?x2xf32>', 'tensor<?x2xi32>' are incompatible with return type(s) of operation 'tensor<?x3xf32>', 'tensor<?x3xi32>'}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
  return
}

// -----

// At least one expert.
func.func @case70(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing num_experts must be positive, got 0}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 0, top_k = 2>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// top_k fits the experts.
func.func @case71(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing top_k must be in [1, num_experts = 8], got 9}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 9>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Groups divide the experts.
func.func @case72(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing n_group must be positive and divide num_experts = 8, got 3}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, n_group = 3>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Kept groups are among the groups.
func.func @case73(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing topk_group must be in [1, n_group = 4], got 5}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, n_group = 4, topk_group = 5>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// top_k fits the kept groups.
func.func @case74(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing top_k = 4 exceeds the experts in the kept groups (2)}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 4, n_group = 4, topk_group = 1>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// top2_sum needs two experts per group.
func.func @case75(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing group_score top2_sum needs at least two experts per group}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, n_group = 8, topk_group = 2, group_score = top2_sum>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The renormalization epsilon is not negative.
func.func @case76(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing norm_epsilon must not be negative}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, norm_epsilon = -1.0>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The routed scaling factor is positive.
func.func @case77(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing routed_scaling_factor must be positive}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, routed_scaling_factor = 0.0>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Unknown scoring functions are rejected.
func.func @case78(%l: tensor<?x8xf32>) {
  // expected-error @+2 {{expected ::ds::ScoringFunc to be one of: softmax, sigmoid}}
  // expected-error @+1 {{failed to parse DS_RoutingAttr parameter 'scoring'}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, scoring = relu>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Dispatch takes [N, H] tokens.
func.func @case79(%x: tensor<?x?x8xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_dispatch' op input must have rank 2}}
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x?x8xf32>, tensor<?x2xi32> -> tensor<?x8xf32>, tensor<5xi64>, tensor<?xi64>
  return
}

// -----

// Dispatch takes [N, k] indices.
func.func @case80(%x: tensor<4x8xf32>, %i: tensor<3x2xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_dispatch' op indices dimension 0 (3) does not match input dimension 0 (4)}}
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<4x8xf32>, tensor<3x2xi32> -> tensor<8x8xf32>, tensor<5xi64>, tensor<8xi64>
  return
}

// -----

// Offsets have num_experts + 1 entries.
func.func @case81(%x: tensor<?x8xf32>, %i: tensor<?x2xi32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_dispatch' op inferred type(s) 'tensor<?x8xf32>', 'tensor<5xi64>', 'tensor<?xi64>' are incompatible with return type(s) of operation 'tensor<?x8xf32>', 'tensor<4xi64>', 'tensor<?xi64>'}}
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x8xf32>, tensor<?x2xi32> -> tensor<?x8xf32>, tensor<4xi64>, tensor<?xi64>
  return
}

// -----

// Stacked expert weights are [E, N, K].
func.func @case82(%x: tensor<?x8xf32>, %w: tensor<16x8xf32>, %o: tensor<5xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.grouped_matmul' op weight must have rank 3}}
  %0 = ds.grouped_matmul %x, %w, %o : tensor<?x8xf32>, tensor<16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  return
}

// -----

// Expert weights hold floats.
func.func @case83(%x: tensor<?x8xf32>, %w: tensor<4x16x8xi8>, %o: tensor<5xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.grouped_matmul' op weight must have a floating-point element type}}
  %0 = ds.grouped_matmul %x, %w, %o : tensor<?x8xf32>, tensor<4x16x8xi8>, tensor<5xi64> -> tensor<?x16xf32>
  return
}

// -----

// K must agree for grouped matmuls.
func.func @case84(%x: tensor<?x8xf32>, %w: tensor<4x16x4xf32>, %o: tensor<5xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.grouped_matmul' op weight dimension 2 (4) does not match input dimension 1 (8)}}
  %0 = ds.grouped_matmul %x, %w, %o : tensor<?x8xf32>, tensor<4x16x4xf32>, tensor<5xi64> -> tensor<?x16xf32>
  return
}

// -----

// Offsets match the expert count.
func.func @case85(%x: tensor<?x8xf32>, %w: tensor<4x16x8xf32>, %o: tensor<9xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.grouped_matmul' op offsets must have num_experts + 1 = 5 entries}}
  %0 = ds.grouped_matmul %x, %w, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<9xi64> -> tensor<?x16xf32>
  return
}

// -----

// Combine reads [M, H] rows.
func.func @case86(%y: tensor<?x2x8xf32>, %w: tensor<?x2xf32>, %r: tensor<?xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_combine' op expert_out must have rank 2}}
  %0 = ds.moe_combine %y, %w, %r : tensor<?x2x8xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x8xf32>
  return
}

// -----

// One row index per row.
func.func @case87(%y: tensor<8x8xf32>, %w: tensor<4x2xf32>, %r: tensor<6xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_combine' op rows dimension 0 (6) does not match expert_out dimension 0 (8)}}
  %0 = ds.moe_combine %y, %w, %r : tensor<8x8xf32>, tensor<4x2xf32>, tensor<6xi64> -> tensor<4x8xf32>
  return
}

// -----

// Rows are tokens x top_k.
func.func @case88(%y: tensor<6x8xf32>, %w: tensor<4x2xf32>, %r: tensor<6xi64>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe_combine' op expert_out has 6 rows but weights select 8 (tokens x top_k)}}
  %0 = ds.moe_combine %y, %w, %r : tensor<6x8xf32>, tensor<4x2xf32>, tensor<6xi64> -> tensor<4x8xf32>
  return
}

// -----

// MoE needs a hidden axis.
func.func @case89(%x: tensor<f32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op input must have rank at least 1}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<f32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<f32>
  return
}

// -----

// Expert counts agree with the routing.
func.func @case90(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op router_weight has 4 experts but the routing has 8}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// The router weight is [E, H].
func.func @case91(%x: tensor<?x16xf32>, %wr: tensor<4x8xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op router_weight dimension 1 (8) does not match input dimension 1 (16)}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x8xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Expert weights read the hidden size.
func.func @case92(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x12xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op expert_gate dimension 2 (12) does not match input dimension 1 (16)}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x12xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Down projections read the expert width.
func.func @case93(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x4xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op expert_down dimension 2 (4) does not match expert_gate dimension 1 (8)}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x4xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Stacked expert weights are rank 3.
func.func @case94(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<32x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op expert_up must have rank 3}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<32x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// MoE weights hold floats.
func.func @case95(%x: tensor<?x16xf32>, %wr: tensor<4x16xi8>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op router_weight must have a floating-point element type}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xi8>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// The score bias has one entry per expert.
func.func @case96(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %b: tensor<3xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op score_bias must be [4], got 'tensor<3xf32>'}}
  %0 = ds.moe %x router %wr bias %b experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<3xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// A shared expert has all three projections.
func.func @case97(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared expert needs all of shared_gate, shared_up and shared_down}}
  %0 = "ds.moe"(%x, %wr, %g, %u, %d, %sg) <{operandSegmentSizes = array<i32: 1, 1, 0, 1, 1, 1, 1, 0, 0, 0>, routing = #ds.routing<num_experts = 4, top_k = 2>}> : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

// The shared gate needs a shared expert.
func.func @case98(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<1x16xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared_expert_gate needs a shared expert}}
  %0 = "ds.moe"(%x, %wr, %g, %u, %d, %sg) <{operandSegmentSizes = array<i32: 1, 1, 0, 1, 1, 1, 0, 0, 0, 1>, routing = #ds.routing<num_experts = 4, top_k = 2>}> : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<1x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Shared projections are matrices.
func.func @case99(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xf32>, %su: tensor<12xf32>, %sd: tensor<16x12xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared_up must have rank 2}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12xf32>, tensor<16x12xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Shared projections hold floats.
func.func @case100(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xi8>, %su: tensor<12x16xf32>, %sd: tensor<16x12xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared_gate must have a floating-point element type}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xi8>, tensor<12x16xf32>, tensor<16x12xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Shared projections agree on their width.
func.func @case101(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xf32>, %su: tensor<12x16xf32>, %sd: tensor<16x10xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared_down dimension 1 (10) does not match shared_gate dimension 0 (12)}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<16x10xf32>) -> tensor<?x16xf32>
  return
}

// -----

// The shared expert gate is [1, H].
func.func @case102(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<12x16xf32>, %su: tensor<12x16xf32>, %sd: tensor<16x12xf32>, %seg: tensor<2x16xf32>) {
  // expected-error @+2 {{failed to infer returned types}}
  // expected-error @+1 {{'ds.moe' op shared_expert_gate must be [1, 16], got 'tensor<2x16xf32>'}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) shared_expert_gate %seg {routing = #ds.routing<num_experts = 4, top_k = 2>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<16x12xf32>, tensor<2x16xf32>) -> tensor<?x16xf32>
  return
}

// -----

// MoE needs its routing.
func.func @case103(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+1 {{'ds.moe' op requires attribute 'routing'}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// A GLU epilogue halves an even output width.
func.func @fused_odd(%x: tensor<?x16xf32>, %w: tensor<15x16xf32>) {
  // expected-error @+2 {{'ds.fused_linear' op gated epilogue needs an even output width, got 15}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_linear %x, %w {activation = #ds.activation<silu>, gated} : (tensor<?x16xf32>, tensor<15x16xf32>) -> tensor<?x7xf32>
  return
}

// -----

// A GLU epilogue needs its activation.
func.func @fused_gated_no_act(%x: tensor<?x16xf32>, %w: tensor<16x16xf32>) {
  // expected-error @+1 {{'ds.fused_linear' op gated epilogue needs an activation}}
  %0 = ds.fused_linear %x, %w {gated} : (tensor<?x16xf32>, tensor<16x16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The norm prologue needs its epsilon.
func.func @fused_norm_eps(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %ln: tensor<16xf32>) {
  // expected-error @+1 {{'ds.fused_linear' op norm_weight and norm_epsilon go together}}
  %0 = ds.fused_linear %x, %w norm(%ln) : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The norm epsilon is positive.
func.func @fused_norm_eps_zero(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %ln: tensor<16xf32>) {
  // expected-error @+1 {{'ds.fused_linear' op norm_epsilon must be positive}}
  %0 = ds.fused_linear %x, %w norm(%ln) {norm_epsilon = 0.0 : f64} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The norm weight spans the input features.
func.func @fused_norm_shape(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %ln: tensor<8xf32>) {
  // expected-error @+2 {{'ds.fused_linear' op norm_weight dimension 0 (8) does not match input dimension 1 (16)}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_linear %x, %w norm(%ln) {norm_epsilon = 1.0e-6 : f64} : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The residual has the result's type.
func.func @fused_residual(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>) {
  // expected-error @+2 {{'ds.fused_linear' op residual 'tensor<?x16xf32>' does not match the result 'tensor<?x8xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_linear %x, %w residual(%x) : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<?x16xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The fused linear's weight and bias follow ds.linear's rules.
func.func @fused_bias(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{'ds.fused_linear' op bias dimension 0 (4) does not match weight dimension 0 (8)}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_linear %x, %w bias(%b) : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<4xf32>) -> tensor<?x8xf32>
  return
}

// -----

// The fused router's weight has one row per routed expert.
func.func @fused_router_experts(%x: tensor<?x16xf32>, %w: tensor<6x16xf32>) {
  // expected-error @+2 {{'ds.fused_router' op weight has 6 experts but the routing has 8}}
  // expected-error @+1 {{failed to infer returned types}}
  %0:2 = ds.fused_router %x, %w {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x16xf32>, tensor<6x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The fused router's bias has one entry per expert.
func.func @fused_router_bias(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %b: tensor<4xf32>) {
  // expected-error @+2 {{'ds.fused_router' op bias must be [8], got 'tensor<4xf32>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %0:2 = ds.fused_router %x, %w bias %b {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x16xf32>, tensor<8x16xf32>, tensor<4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// The fused router reads [N, H] tokens.
func.func @fused_router_rank(%x: tensor<?x?x16xf32>, %w: tensor<8x16xf32>) {
  // expected-error @+2 {{'ds.fused_router' op input must have rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %0:2 = ds.fused_router %x, %w {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x?x16xf32>, tensor<8x16xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// gate_up stacks gate and up: twice the down projection's width.
func.func @fused_moe_width(%x: tensor<?x16xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>, %gu: tensor<4x16x16xf32>, %d: tensor<4x16x4xf32>) {
  // expected-error @+2 {{'ds.fused_moe' op gate_up rows (16) must be twice the down projection's width (4)}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_moe %x, %w, %i experts(%gu, %d) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x4xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Weights and indices agree on top_k.
func.func @fused_moe_k(%x: tensor<?x16xf32>, %w: tensor<?x2xf32>, %i: tensor<?x3xi32>, %gu: tensor<4x16x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{'ds.fused_moe' op indices dimension 1 (3) does not match weights dimension 1 (2)}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_moe %x, %w, %i experts(%gu, %d) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x3xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Gate/up and down agree on the expert count.
func.func @fused_moe_experts(%x: tensor<?x16xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>, %gu: tensor<4x16x16xf32>, %d: tensor<8x16x8xf32>) {
  // expected-error @+2 {{'ds.fused_moe' op down dimension 0 (8) does not match gate_up dimension 0 (4)}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_moe %x, %w, %i experts(%gu, %d) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<8x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// select lists one index per leading slice.
func.func @param_select_count() {
  // expected-error @+1 {{'ds.param' op select lists 2 slices but the leading dimension is 3}}
  %0 = ds.param "experts.*.w" select [0, 1] : tensor<3x4x4xf32>
  return
}

// -----

// select indices are not negative.
func.func @param_select_negative() {
  // expected-error @+1 {{'ds.param' op select indices must not be negative, got -1}}
  %0 = ds.param "experts.*.w" select [0, -1] : tensor<2x4x4xf32>
  return
}

// -----

// Kept experts are ascending and in range.
func.func @routing_kept_order(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing kept experts must be ascending and in [0, 8)}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, kept = [3, 1]>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Pruning keeps at least top_k experts.
func.func @routing_kept_too_few(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing keeps 1 experts, fewer than top_k = 2}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, kept = [5]>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Placement slots hold selectable experts (here the kept ones: 0 and 1).
func.func @routing_slots_range(%l: tensor<?x8xf32>) {
  // expected-error @+1 {{routing slots must hold experts in [0, 3), got 3}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2, kept = [1, 4, 6], slots = [0, 3, 1, 2]>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// At least one slot per selectable expert.
func.func @routing_slots_few(%l: tensor<?x4xf32>) {
  // expected-error @+1 {{routing has 2 slots, fewer than its 4 selectable experts}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 4, top_k = 2, slots = [0, 1]>} : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Every selectable expert needs a slot.
func.func @routing_slots_missing(%l: tensor<?x4xf32>) {
  // expected-error @+1 {{routing slots hold no copy of expert 2}}
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 4, top_k = 2, slots = [0, 1, 3, 0]>} : tensor<?x4xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return
}

// -----

// Placed experts: one weight slice per slot.
func.func @moe_slots_weights(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{'ds.moe' op expert_gate has 4 experts but the routing keeps 6}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2, slots = [0, 1, 0, 2, 3, 1]>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// After pruning, expert weights have one slice per kept expert.
func.func @moe_kept_weights(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{'ds.moe' op expert_gate has 4 experts but the routing keeps 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2, kept = [0, 2]>} : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// Quantized storage is i8, ui8, i4, ui4 or f8E4M3FN.
// expected-error @+1 {{storage type must be i8, ui8, i4, ui4 or f8E4M3FN}}
func.func @qcase0(%w: !ds.qtensor<4x4xi16, f32, block = [1, 0]>) {
  return
}

// -----

// The expressed type is f32, bf16 or f16.
// expected-error @+1 {{expressed type must be f32, bf16 or f16}}
func.func @qcase1(%w: !ds.qtensor<4x4xi8, f64, block = [1, 0]>) {
  return
}

// -----

// One block extent per axis.
// expected-error @+1 {{block has 1 entries but the shape has rank 2}}
func.func @qcase2(%w: !ds.qtensor<4x4xi8, f32, block = [1]>) {
  return
}

// -----

// Block extents are not negative.
// expected-error @+1 {{block extents must be >= 0}}
func.func @qcase3(%w: !ds.qtensor<4x4xi8, f32, block = [1, -2]>) {
  return
}

// -----

// The expressed type must be a float type.
// expected-error @+1 {{expressed type must be a float type}}
func.func @qcase4(%w: !ds.qtensor<4x4xi8, i32, block = [1, 0]>) {
  return
}

// -----

// Activations are quantized to i8 or e4m3.
func.func @qcase5(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{activations are quantized to i8 or f8E4M3FN}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i4, group = 0>} : tensor<?x4xf32> -> !ds.qtensor<?x4xi4, f32, block = [1, 0]>
  return
}

// -----

func.func @qcase6(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{group must be >= 0}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = -1>} : tensor<?x4xf32> -> !ds.qtensor<?x4xi8, f32, block = [1, 0]>
  return
}

// -----

// A static scale covers the whole tensor.
func.func @qcase7(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{a static scale covers the whole tensor; group must be 0}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 2, scale = 0.5>} : tensor<?x4xf32> -> !ds.qtensor<?x4xi8, f32, block = [1, 2]>
  return
}

// -----

func.func @qcase8(%x: tensor<?x4xf32>) {
  // expected-error @+1 {{scale must be a finite value >= 0}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0, scale = -1.0>} : tensor<?x4xf32> -> !ds.qtensor<?x4xi8, f32, block = [0, 0]>
  return
}

// -----

// The written result type must be the one the scheme gives.
func.func @qcase9(%x: tensor<?x4xf32>) {
  // expected-error @+2 {{'ds.quantize' op inferred type(s) '!ds.qtensor<?x4xi8, f32, block = [1, 0]>' are incompatible with return type(s) of operation '!ds.qtensor<?x4xi8, f32, block = [1, 2]>'}}
  // expected-error @+1 {{failed to infer returned types}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x4xf32> -> !ds.qtensor<?x4xi8, f32, block = [1, 2]>
  return
}

// -----

// Quantized inputs are floats of a supported width.
func.func @qcase10(%x: tensor<?x4xf64>) {
  // expected-error @+2 {{input must be f32, bf16 or f16}}
  // expected-error @+1 {{failed to infer returned types}}
  %q = ds.quantize %x {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x4xf64> -> !ds.qtensor<?x4xi8, f32, block = [1, 0]>
  return
}

// -----

// Quantized weights name their scales.
func.func @qcase11() {
  // expected-error @+1 {{a quantized weight needs the name of its scales}}
  %0 = ds.param "w" : !ds.qtensor<4x4xi8, f32, block = [1, 0]>
  return
}

// -----

// Scales belong to quantized weights.
func.func @qcase12() {
  // expected-error @+1 {{scales and zero_points belong to !ds.qtensor weights}}
  %0 = ds.param "w" scales "s" : tensor<4x4xf32>
  return
}

// -----

// Unsigned storage has zero points.
func.func @qcase13() {
  // expected-error @+1 {{unsigned storage needs zero_points}}
  %0 = ds.param "w" scales "s" : !ds.qtensor<4x4xui4, f32, block = [1, 0]>
  return
}

// -----

// Signed storage has none.
func.func @qcase14() {
  // expected-error @+1 {{zero_points need unsigned storage (ui4, ui8)}}
  %0 = ds.param "w" scales "s" zero_points "z" : !ds.qtensor<4x4xi4, f32, block = [1, 0]>
  return
}

// -----

// Stacked scales are stacked too.
func.func @qcase15() {
  // expected-error @+1 {{scales and zero_points names need the same '*' placeholder}}
  %0 = ds.param "e.*.w" scales "s" : !ds.qtensor<2x4x4xi8, f32, block = [1, 1, 0]>
  return
}

// -----

// Stacked weights are quantized expert by expert.
func.func @qcase16() {
  // expected-error @+1 {{a stacked quantized weight needs block extent 1 along the expert axis}}
  %0 = ds.param "e.*.w" scales "e.*.s" : !ds.qtensor<2x4x4xi8, f32, block = [0, 1, 0]>
  return
}

// -----

func.func @qcase17() {
  // expected-error @+1 {{select on a quantized weight needs a stacked name}}
  %0 = ds.param "w" select [0] scales "s" : !ds.qtensor<1x4xi8, f32, block = [1, 0]>
  return
}

// -----

// A fused linear quantizes its own (float) input.
func.func @qcase18(%x: !ds.qtensor<?x4xi8, f32, block = [1, 0]>, %w: tensor<8x4xf32>) {
  // expected-error @+1 {{operand #0 must be ranked tensor of floating-point values}}
  %y = ds.fused_linear %x, %w {input_quant = #ds.act_quant<i8, group = 0>} : (!ds.qtensor<?x4xi8, f32, block = [1, 0]>, tensor<8x4xf32>) -> tensor<?x8xf32>
  return
}

// -----

// 2:4 groups run along the last axis.
// expected-error @+1 {{the last dimension (6) must be a positive multiple of 4}}
func.func @scase0(%w: !ds.sparse24<4x6xf32>) {
  return
}

// -----

// expected-error @+1 {{element type must be f32, bf16 or f16}}
func.func @scase1(%w: !ds.sparse24<4x8xf64>) {
  return
}

// -----

// expected-error @+1 {{a 2:4 sparse weight has a static shape}}
func.func @scase2(%w: !ds.sparse24<?x8xf32>) {
  return
}

// -----

// expected-error @+1 {{element type must be a float type}}
func.func @scase3(%w: !ds.sparse24<4x8xi8>) {
  return
}

// -----

func.func @scase4() {
  // expected-error @+1 {{a 2:4 sparse weight needs the name of its meta indices}}
  %0 = ds.param "w" : !ds.sparse24<4x8xf32>
  return
}

// -----

func.func @scase5() {
  // expected-error @+1 {{meta belongs to !ds.sparse24 weights}}
  %0 = ds.param "w" meta "m" : tensor<4x8xf32>
  return
}

// -----

func.func @scase6() {
  // expected-error @+1 {{the meta name needs the same '*' placeholder as the weight name}}
  %0 = ds.param "e.*.w" meta "m" : !ds.sparse24<2x4x8xf32>
  return
}

// -----

func.func @scase7() {
  // expected-error @+1 {{select on a sparse weight needs a stacked name}}
  %0 = ds.param "w" select [0] meta "m" : !ds.sparse24<1x8xf32>
  return
}

// -----

// Inputs have the result's rank.
func.func @ecase0(%x: tensor<?xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{input 0 has rank 1, the result 2}}
  %y = ds.fused_elementwise %x : (tensor<?xf32>) -> tensor<?x4xf32> {
  ^bb0(%a: f32):
    ds.yield %a : f32
  }
  return %y : tensor<?x4xf32>
}

// -----

// Sizes match the result's or broadcast from 1.
func.func @ecase1(%x: tensor<?x3xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{input 0 dimension 1 (3) neither matches the result's (4) nor broadcasts (1)}}
  %y = ds.fused_elementwise %x : (tensor<?x3xf32>) -> tensor<?x4xf32> {
  ^bb0(%a: f32):
    ds.yield %a : f32
  }
  return %y : tensor<?x4xf32>
}

// -----

func.func @ecase2(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{body has 2 arguments for 1 inputs}}
  %y = ds.fused_elementwise %x : (tensor<?x4xf32>) -> tensor<?x4xf32> {
  ^bb0(%a: f32, %b: f32):
    ds.yield %a : f32
  }
  return %y : tensor<?x4xf32>
}

// -----

func.func @ecase3(%x: tensor<?x4xbf16>) -> tensor<?x4xf32> {
  // expected-error @+1 {{body argument 0 must be 'bf16', got 'f32'}}
  %y = ds.fused_elementwise %x : (tensor<?x4xbf16>) -> tensor<?x4xf32> {
  ^bb0(%a: f32):
    ds.yield %a : f32
  }
  return %y : tensor<?x4xf32>
}

// -----

func.func @ecase4(%x: tensor<?x4xbf16>) -> tensor<?x4xf32> {
  // expected-error @+1 {{body yields 'bf16' for a result of 'f32'}}
  %y = ds.fused_elementwise %x : (tensor<?x4xbf16>) -> tensor<?x4xf32> {
  ^bb0(%a: bf16):
    ds.yield %a : bf16
  }
  return %y : tensor<?x4xf32>
}

// -----

// The body is scalar arith and math only.
func.func @ecase5(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %y = ds.fused_elementwise %x : (tensor<?x4xf32>) -> tensor<?x4xf32> {
  ^bb0(%a: f32):
    // expected-error @+1 {{is not a scalar arith or math op; a ds.fused_elementwise body holds only those}}
    %t = tensor.from_elements %a : tensor<1xf32>
    ds.yield %a : f32
  }
  return %y : tensor<?x4xf32>
}

// -----

// The body ends in ds.yield.
func.func @ecase6(%x: tensor<?x4xf32>) -> tensor<?x4xf32> {
  // expected-error @+1 {{body must end in ds.yield}}
  %y = ds.fused_elementwise %x : (tensor<?x4xf32>) -> tensor<?x4xf32> {
  ^bb0(%a: f32):
    llvm.unreachable
  }
  return %y : tensor<?x4xf32>
}

// -----

func.func @ecase8() -> tensor<4xf32> {
  // expected-error @+1 {{needs at least one input}}
  %y = ds.fused_elementwise : () -> tensor<4xf32> {
  ^bb0:
    %c = arith.constant 1.0 : f32
    ds.yield %c : f32
  }
  return %y : tensor<4xf32>
}

// -----

// An empty 2:4 axis.
// expected-error @+1 {{the last dimension (0) must be a positive multiple of 4}}
func.func @scase8(%w: !ds.sparse24<4x0xf32>) {
  return
}

// -----

// ds.yield lives in a ds.fused_elementwise.
func.func @ecase7(%a: f32) {
  // expected-error @+1 {{expects parent op 'ds.fused_elementwise'}}
  ds.yield %a : f32
}

// -----

// A block may not straddle two inputs.
func.func @ccase0(%a: !ds.qtensor<24x64xi8, f32, block = [32, 32]>, %b: !ds.qtensor<40x64xi8, f32, block = [32, 32]>) {
  // expected-error @+2 {{a block (32 along axis 0) would straddle inputs of size 24}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a, %b axis 0 : (!ds.qtensor<24x64xi8, f32, block = [32, 32]>, !ds.qtensor<40x64xi8, f32, block = [32, 32]>) -> !ds.qtensor<64x64xi8, f32, block = [32, 32]>
  return
}

// -----

// A whole-axis block cannot be split in two.
func.func @ccase1(%a: !ds.qtensor<4x64xi8, f32, block = [0, 1]>, %b: !ds.qtensor<4x64xi8, f32, block = [0, 1]>) {
  // expected-error @+2 {{a block (0 along axis 0) would straddle inputs of size 4}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a, %b axis 0 : (!ds.qtensor<4x64xi8, f32, block = [0, 1]>, !ds.qtensor<4x64xi8, f32, block = [0, 1]>) -> !ds.qtensor<8x64xi8, f32, block = [0, 1]>
  return
}

// -----

func.func @ccase2(%a: !ds.qtensor<4x64xi8, f32, block = [1, 0]>, %b: !ds.qtensor<4x64xi4, f32, block = [1, 0]>) {
  // expected-error @+2 {{inputs must have one kind, storage and block}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a, %b axis 0 : (!ds.qtensor<4x64xi8, f32, block = [1, 0]>, !ds.qtensor<4x64xi4, f32, block = [1, 0]>) -> !ds.qtensor<8x64xi8, f32, block = [1, 0]>
  return
}

// -----

func.func @ccase3(%a: !ds.qtensor<4x64xi8, f32, block = [1, 0]>, %b: !ds.qtensor<4x32xi8, f32, block = [1, 0]>) {
  // expected-error @+2 {{inputs differ in dimension 1}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a, %b axis 0 : (!ds.qtensor<4x64xi8, f32, block = [1, 0]>, !ds.qtensor<4x32xi8, f32, block = [1, 0]>) -> !ds.qtensor<8x64xi8, f32, block = [1, 0]>
  return
}

// -----

func.func @ccase4(%a: !ds.sparse24<4x8xf32>, %b: !ds.sparse24<4x8xf32>) {
  // expected-error @+2 {{2:4 weights cannot be joined along their last axis}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a, %b axis 1 : (!ds.sparse24<4x8xf32>, !ds.sparse24<4x8xf32>) -> !ds.sparse24<4x16xf32>
  return
}

// -----

func.func @ccase5(%a: !ds.sparse24<4x8xf32>) {
  // expected-error @+2 {{axis 2 is outside the rank 2}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a axis 2 : (!ds.sparse24<4x8xf32>) -> !ds.sparse24<4x8xf32>
  return
}

// -----

// Plain tensors are joined by tensor.concat.
func.func @ccase6(%a: tensor<4x8xf32>) {
  // expected-error @+2 {{joins !ds.qtensor or !ds.sparse24 weights (use tensor.concat for tensors)}}
  // expected-error @+1 {{failed to infer returned types}}
  %c = ds.concat_weights %a axis 0 : (tensor<4x8xf32>) -> tensor<4x8xf32>
  return
}

// -----

// A sharded weight names its grid and its split axes together.
func.func @shard0() {
  // expected-error @+1 {{a sharded weight needs both its grid and its split axes}}
  %0 = "ds.param"() <{name = "w", grid = @grid}> : () -> tensor<4xf32>
  return
}

// -----

// No more split dimensions than the weight has.
func.func @shard1() {
  // expected-error @+1 {{has split axes for 2 dimensions, the weight has rank 1}}
  %0 = ds.param "w" sharded @grid [[0], []] : tensor<4xf32>
  return
}

// -----

// A grid axis splits one dimension.
func.func @shard2() {
  // expected-error @+1 {{splits over grid axis 0, which is negative or used twice}}
  %0 = ds.param "w" sharded @grid [[0], [0]] : tensor<4x4xf32>
  return
}

// -----

// Only plain tensors are sharded.
func.func @shard3() {
  // expected-error @+1 {{only plain tensor weights can be sharded}}
  %0 = ds.param "w" scales "s" sharded @grid [[0]] : !ds.qtensor<4x4xi8, f32, block = [1, 0]>
  return
}

// -----

// A block of experts names its grid and its axes together.
func.func @moe_block(%x: tensor<?x8xf32>, %r: tensor<4x8xf32>, %g: tensor<2x6x8xf32>, %d: tensor<2x8x6xf32>) {
  // expected-error @+2 {{expert_grid and expert_grid_axes go together}}
  // expected-error @+1 {{failed to infer returned types}}
  %y = ds.moe %x router %r experts(%g, %g, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>, expert_grid = @grid} : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<2x6x8xf32>, tensor<2x6x8xf32>, tensor<2x8x6xf32>) -> tensor<?x8xf32>
  return
}

// -----

// An all-to-all exchanges rows between blocks of experts.
func.func @moe_all_to_all_block(%x: tensor<?x8xf32>, %r: tensor<4x8xf32>, %g: tensor<4x6x8xf32>, %d: tensor<4x8x6xf32>) {
  // expected-error @+2 {{all_to_all needs a block of experts (expert_grid)}}
  // expected-error @+1 {{failed to infer returned types}}
  %y = ds.moe %x router %r experts(%g, %g, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>, all_to_all} : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<4x6x8xf32>, tensor<4x6x8xf32>, tensor<4x8x6xf32>) -> tensor<?x8xf32>
  return
}

// -----

func.func @fused_moe_all_to_all_block(%x: tensor<?x8xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>, %gu: tensor<4x12x8xf32>, %d: tensor<4x8x6xf32>) {
  // expected-error @+2 {{all_to_all needs a block of experts (expert_grid)}}
  // expected-error @+1 {{failed to infer returned types}}
  %y = ds.fused_moe %x, %w, %i experts(%gu, %d) {all_to_all} : (tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x12x8xf32>, tensor<4x8x6xf32>) -> tensor<?x8xf32>
  return
}

// -----

// A block is a divisor of the experts.
func.func @moe_block2(%x: tensor<?x8xf32>, %r: tensor<4x8xf32>, %g: tensor<3x6x8xf32>, %d: tensor<3x8x6xf32>) {
  // expected-error @+2 {{expert_gate has 3 experts but the routing keeps a multiple of them, 4}}
  // expected-error @+1 {{failed to infer returned types}}
  %y = ds.moe %x router %r experts(%g, %g, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>, expert_grid = @grid, expert_grid_axes = array<i16: 0>} : (tensor<?x8xf32>, tensor<4x8xf32>, tensor<3x6x8xf32>, tensor<3x6x8xf32>, tensor<3x8x6xf32>) -> tensor<?x8xf32>
  return
}

// -----

// A fused MoE's block of experts names its grid and its axes together too.
func.func @fused_moe_block(%x: tensor<?x16xf32>, %w: tensor<?x2xf32>, %i: tensor<?x2xi32>, %gu: tensor<4x16x16xf32>, %d: tensor<4x16x8xf32>) {
  // expected-error @+2 {{expert_grid and expert_grid_axes go together}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.fused_moe %x, %w, %i experts(%gu, %d) {expert_grid_axes = array<i16: 0>} : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return
}

// -----

// A block of the vocabulary names its grid and its axes together.
func.func @embedding_block(%t: tensor<32x16xf32>, %ids: tensor<?xi64>) {
  // expected-error @+2 {{vocab_grid and vocab_grid_axes go together}}
  // expected-error @+1 {{failed to infer returned types}}
  %0 = ds.embedding %t[%ids] {vocab_grid = @grid} : tensor<32x16xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return
}
