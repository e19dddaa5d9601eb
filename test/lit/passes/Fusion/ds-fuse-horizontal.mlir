// RUN: ds-opt %s -ds-fuse-horizontal -split-input-file | FileCheck %s
// RUN: ds-opt %s -ds-fuse-horizontal=grouped-matmuls=false -split-input-file | FileCheck %s --check-prefix=NOGROUPED

// Q, K and V read the same input: one linear over the concatenated weights
// and biases, split back; the weight params move up to the first projection.
// CHECK-LABEL: func.func @qkv
// CHECK-SAME: (%[[H:.+]]: tensor<?x?x64xf32>)
// CHECK-DAG: %[[WQ:.+]] = ds.param "q.weight"
// CHECK-DAG: %[[WK:.+]] = ds.param "k.weight"
// CHECK-DAG: %[[WV:.+]] = ds.param "v.weight"
// CHECK-DAG: %[[BQ:.+]] = ds.param "q.bias"
// CHECK-DAG: %[[BK:.+]] = ds.param "k.bias"
// CHECK-DAG: %[[BV:.+]] = ds.param "v.bias"
// CHECK: %[[W:.+]] = tensor.concat dim(0) %[[WQ]], %[[WK]], %[[WV]] : (tensor<64x64xf32>, tensor<32x64xf32>, tensor<32x64xf32>) -> tensor<128x64xf32>
// CHECK: %[[B:.+]] = tensor.concat dim(0) %[[BQ]], %[[BK]], %[[BV]]
// CHECK: %[[Y:.+]] = ds.linear %[[H]], %[[W]], %[[B]] : tensor<?x?x64xf32>, tensor<128x64xf32>, tensor<128xf32> -> tensor<?x?x128xf32>
// CHECK: %[[S:.+]]:3 = ds.split %[[Y]] axis 2 sizes [64, 32, 32]
// CHECK: return %[[S]]#0, %[[S]]#1, %[[S]]#2
func.func @qkv(%h: tensor<?x?x64xf32>) -> (tensor<?x?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>) {
  %wq = ds.param "q.weight" : tensor<64x64xf32>
  %bq = ds.param "q.bias" : tensor<64xf32>
  %q = ds.linear %h, %wq, %bq : tensor<?x?x64xf32>, tensor<64x64xf32>, tensor<64xf32> -> tensor<?x?x64xf32>
  %wk = ds.param "k.weight" : tensor<32x64xf32>
  %bk = ds.param "k.bias" : tensor<32xf32>
  %k = ds.linear %h, %wk, %bk : tensor<?x?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x?x32xf32>
  %wv = ds.param "v.weight" : tensor<32x64xf32>
  %bv = ds.param "v.bias" : tensor<32xf32>
  %v = ds.linear %h, %wv, %bv : tensor<?x?x64xf32>, tensor<32x64xf32>, tensor<32xf32> -> tensor<?x?x32xf32>
  return %q, %k, %v : tensor<?x?x64xf32>, tensor<?x?x32xf32>, tensor<?x?x32xf32>
}

// -----

// A projection with a bias does not join ones without; a weight computed
// after the first projection (not an operand-free param) does not move.
// CHECK-LABEL: func.func @mismatched
// CHECK: %[[W:.+]] = tensor.concat dim(0)
// CHECK: ds.linear %{{.*}}, %[[W]] : tensor<?x16xf32>, tensor<16x16xf32> -> tensor<?x16xf32>
// CHECK: ds.split
// CHECK: ds.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32>
// CHECK: ds.linear %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<4x16xf32>
func.func @mismatched(%x: tensor<?x16xf32>, %w1: tensor<8x16xf32>, %w2: tensor<8x16xf32>, %w3: tensor<8x16xf32>,
                      %b3: tensor<8xf32>, %w4: tensor<16x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x4xf32>) {
  %a = ds.linear %x, %w1 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %b = ds.linear %x, %w2 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %c = ds.linear %x, %w3, %b3 : tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<?x8xf32>
  %t = ds.param "late" : tensor<4x8xf32>
  %m = ds.linear %t, %w4 : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %d = ds.linear %x, %m : tensor<?x16xf32>, tensor<4x16xf32> -> tensor<?x4xf32>
  return %a, %b, %c, %d : tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x8xf32>, tensor<?x4xf32>
}

// -----

// Routed gate and up grouped matmuls share rows and offsets: one grouped
// matmul over [E, 2I, K] weights, split along the output axis. With
// grouped-matmuls=false they stay apart.
// CHECK-LABEL: func.func @experts
// CHECK: %[[W:.+]] = tensor.concat dim(1) %{{.*}}, %{{.*}} : (tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> tensor<4x16x16xf32>
// CHECK: %[[Y:.+]] = ds.grouped_matmul %{{.*}}, %[[W]], %{{.*}} : tensor<?x16xf32>, tensor<4x16x16xf32>, tensor<5xi64> -> tensor<?x16xf32>
// CHECK: %[[S:.+]]:2 = ds.split %[[Y]] axis 1 sizes [8, 8]
// CHECK: ds.swiglu %[[S]]#0, %[[S]]#1
// NOGROUPED-LABEL: func.func @experts
// NOGROUPED-COUNT-2: ds.grouped_matmul
// NOGROUPED-NOT: tensor.concat
func.func @experts(%x: tensor<?x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %o: tensor<5xi64>) -> tensor<?x8xf32> {
  %a = ds.grouped_matmul %x, %g, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %b = ds.grouped_matmul %x, %u, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %h = ds.swiglu %a, %b : tensor<?x8xf32>
  return %h : tensor<?x8xf32>
}

// -----

// A lone projection is left alone.
// CHECK-LABEL: func.func @single
// NOGROUPED-LABEL: func.func @single
// CHECK-NOT: tensor.concat
// CHECK-NOT: ds.split
func.func @single(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>) -> tensor<?x8xf32> {
  %a = ds.linear %x, %w : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  return %a : tensor<?x8xf32>
}

// -----

// Merging one group erases the op defining another group's input; both
// groups are still merged. A weight with a dynamic width is left out.
// CHECK-LABEL: func.func @chained_groups
// CHECK: %[[Y:.+]]:2 = ds.split %{{.*}} axis 1 sizes [8, 8]
// CHECK: ds.linear %[[Y]]#0, %{{.*}} : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
// CHECK: ds.split %{{.*}} axis 1 sizes [4, 4]
// CHECK: ds.linear %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x?xf32>
func.func @chained_groups(%x: tensor<?x16xf32>, %w1: tensor<8x16xf32>, %w2: tensor<8x16xf32>, %w3: tensor<4x8xf32>,
                          %w4: tensor<4x8xf32>, %wd: tensor<?x16xf32>) -> (tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x?xf32>) {
  %y = ds.linear %x, %w1 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %z = ds.linear %x, %w2 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %a = ds.linear %y, %w3 : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
  %b = ds.linear %y, %w4 : tensor<?x8xf32>, tensor<4x8xf32> -> tensor<?x4xf32>
  %d = ds.linear %x, %wd : tensor<?x16xf32>, tensor<?x16xf32> -> tensor<?x?xf32>
  return %z, %a, %b, %d : tensor<?x8xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x?xf32>
}
