// RUN: ds-opt %s --split-input-file --ds-partition=tp=4 -verify-diagnostics | FileCheck %s

// Two KV heads over four processes: each is repeated twice (rows of head
// 0, head 0, head 1, head 1), and each process holds one copy. One value
// passed as both keys and values (MQA style) is repeated once.
// CHECK-LABEL: func.func @shared_kv
// CHECK: ds.param "k" select [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31] sharded @grid {{\[\[}}0]] : tensor<16x64xf32>
// CHECK: ds.split_heads {{.*}} into 1 : tensor<?x?x16xf32> -> tensor<?x?x1x16xf32>
// CHECK: ds.attention {{.*}} : tensor<?x?x1x16xf32>, tensor<?x?x1x16xf32>, tensor<?x?x1x16xf32>, tensor<?x?xi64> -> tensor<?x?x1x16xf32>
func.func @shared_kv(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x64xf32> {
  %wq = ds.param "q" : tensor<64x64xf32>
  %wk = ds.param "k" : tensor<32x64xf32>
  %wo = ds.param "o" : tensor<64x64xf32>
  %q = ds.linear %x, %wq : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %k = ds.linear %x, %wk : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh = ds.split_heads %k into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %a = ds.attention %qh, %kh, %kh, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %m = ds.merge_heads %a : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %o = ds.linear %m, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  return %o : tensor<?x?x64xf32>
}

// -----

// The keys' heads also feed another op: repeating them would change what
// it reads.
func.func @kv_used_elsewhere(%x: tensor<?x?x64xf32>, %pos: tensor<?x?xi64>) -> (tensor<?x?x64xf32>, tensor<?x?x2x16xf32>) {
  %wq = ds.param "q" : tensor<64x64xf32>
  %wk = ds.param "k" : tensor<32x64xf32>
  %wo = ds.param "o" : tensor<64x64xf32>
  %q = ds.linear %x, %wq : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %k = ds.linear %x, %wk : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %qh = ds.split_heads %q into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh = ds.split_heads %k into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %kr = ds.rope %kh, %pos {rope = #ds.rope<dim = 16, theta = 10000.0>} : tensor<?x?x2x16xf32>, tensor<?x?xi64>
  %kn = ds.mul %kh, %kh : tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32> -> tensor<?x?x2x16xf32>
  // expected-error @below {{cannot repeat its KV heads: a value on the way to it has other users}}
  %a = ds.attention %qh, %kr, %kr, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %m = ds.merge_heads %a : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %o = ds.linear %m, %wo : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  return %o, %kn : tensor<?x?x64xf32>, tensor<?x?x2x16xf32>
}
