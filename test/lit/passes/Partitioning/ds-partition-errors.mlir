// RUN: ds-opt %s --split-input-file --ds-partition=tp=4 --verify-diagnostics
// RUN: not ds-opt %s --split-input-file "--ds-partition=ep=2 moe-all-to-all" 2>&1 | FileCheck %s --check-prefix=A2A
// RUN: not ds-opt %s --split-input-file "--ds-partition=dp=2 ep=2 moe-all-to-all" 2>&1 | FileCheck %s --check-prefix=A2A
// A2A: ds-partition: moe-all-to-all splits the experts over the data-parallel processes: it needs dp > 1 and ep = 1

// Three KV heads over four processes: four is not a multiple of three, so
// they cannot be repeated into one per process either.
func.func @kv_heads(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x64xf32> {
  %wq = ds.param "q" : tensor<192x64xf32>
  %wk = ds.param "k" : tensor<48x64xf32>
  %wo = ds.param "o" : tensor<64x192xf32>
  %q = ds.linear %x, %wq : tensor<?x?x64xf32>, tensor<192x64xf32> -> tensor<?x?x192xf32>
  %k = ds.linear %x, %wk : tensor<?x?x64xf32>, tensor<48x64xf32> -> tensor<?x?x48xf32>
  %qh = ds.split_heads %q into 12 : tensor<?x?x192xf32> -> tensor<?x?x12x16xf32>
  // expected-error @below {{3 heads do not split evenly over 4 processes}}
  %kh = ds.split_heads %k into 3 : tensor<?x?x48xf32> -> tensor<?x?x3x16xf32>
  %a = ds.attention %qh, %kh, %kh, %pos {scale = 0.25 : f64} : tensor<?x?x12x16xf32>, tensor<?x?x3x16xf32>, tensor<?x?x3x16xf32>, tensor<?x?xi64> -> tensor<?x?x12x16xf32>
  %m = ds.merge_heads %a : tensor<?x?x12x16xf32> -> tensor<?x?x192xf32>
  %o = ds.linear %m, %wo : tensor<?x?x192xf32>, tensor<64x192xf32> -> tensor<?x?x64xf32>
  return %o : tensor<?x?x64xf32>
}

// -----

// A vocabulary that does not divide by tp.
func.func @vocab(%x: tensor<?x?x16xf32>) -> tensor<?x?x30xf32> {
  // expected-error @below {{dimension 0 of 'lm_head.weight' (30) does not split evenly over 4 processes}}
  %w = ds.param "lm_head.weight" : tensor<30x16xf32>
  %l = ds.linear %x, %w : tensor<?x?x16xf32>, tensor<30x16xf32> -> tensor<?x?x30xf32>
  return %l : tensor<?x?x30xf32>
}

// -----

// Quantized weights cannot be sharded yet: partition first.
func.func @quantized(%x: tensor<?x?x16xf32>) -> tensor<?x?x32xf32> {
  // expected-error @below {{quantized and 2:4 sparse weights cannot be sharded yet}}
  %w = ds.param "lm_head.weight" scales "lm_head.scales" : !ds.qtensor<32x16xi8, f32, block = [1, 0]>
  %l = ds.linear %x, %w : tensor<?x?x16xf32>, !ds.qtensor<32x16xi8, f32, block = [1, 0]> -> tensor<?x?x32xf32>
  return %l : tensor<?x?x32xf32>
}

// -----

// expected-error @below {{already has a symbol @grid}}
module {
  shard.grid @grid(shape = 2)
}
