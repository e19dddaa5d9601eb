// RUN: ds-opt %s -canonicalize -split-input-file | FileCheck %s

// merge_heads(split_heads(x)) folds back to x.
// CHECK-LABEL: func.func @merge_of_split
// CHECK-SAME: (%[[X:.+]]: tensor<?x?x64xf32>)
// CHECK-NEXT: return %[[X]]
func.func @merge_of_split(%x: tensor<?x?x64xf32>) -> tensor<?x?x64xf32> {
  %0 = ds.split_heads %x into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %1 = ds.merge_heads %0 : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  return %1 : tensor<?x?x64xf32>
}

// -----

// split_heads(merge_heads(x)) with the same head count folds back to x.
// CHECK-LABEL: func.func @split_of_merge
// CHECK-SAME: (%[[X:.+]]: tensor<?x4x16xf32>)
// CHECK-NEXT: return %[[X]]
func.func @split_of_merge(%x: tensor<?x4x16xf32>) -> tensor<?x4x16xf32> {
  %0 = ds.merge_heads %x : tensor<?x4x16xf32> -> tensor<?x64xf32>
  %1 = ds.split_heads %0 into 4 : tensor<?x64xf32> -> tensor<?x4x16xf32>
  return %1 : tensor<?x4x16xf32>
}

// -----

// A different head count is a real reshape and stays.
// CHECK-LABEL: func.func @split_of_merge_regroup
// CHECK: ds.merge_heads
// CHECK: ds.split_heads
func.func @split_of_merge_regroup(%x: tensor<?x4x16xf32>) -> tensor<?x8x8xf32> {
  %0 = ds.merge_heads %x : tensor<?x4x16xf32> -> tensor<?x64xf32>
  %1 = ds.split_heads %0 into 8 : tensor<?x64xf32> -> tensor<?x8x8xf32>
  return %1 : tensor<?x8x8xf32>
}

// -----

// split(concat(a, b)) along the same axis with the same sizes is (a, b).
// CHECK-LABEL: func.func @split_of_concat
// CHECK-SAME: (%[[A:.+]]: tensor<?x16xf32>, %[[B:.+]]: tensor<?x8xf32>)
// CHECK-NEXT: return %[[B]], %[[A]]
func.func @split_of_concat(%a: tensor<?x16xf32>, %b: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x16xf32>) {
  %c = tensor.concat dim(1) %a, %b : (tensor<?x16xf32>, tensor<?x8xf32>) -> tensor<?x24xf32>
  %0:2 = ds.split %c axis 1 sizes [16, 8] : tensor<?x24xf32> -> tensor<?x16xf32>, tensor<?x8xf32>
  return %0#1, %0#0 : tensor<?x8xf32>, tensor<?x16xf32>
}

// -----

// Different sizes: the split stays.
// CHECK-LABEL: func.func @split_of_concat_other_sizes
// CHECK: tensor.concat
// CHECK: ds.split
func.func @split_of_concat_other_sizes(%a: tensor<?x16xf32>, %b: tensor<?x8xf32>) -> tensor<?x12xf32> {
  %c = tensor.concat dim(1) %a, %b : (tensor<?x16xf32>, tensor<?x8xf32>) -> tensor<?x24xf32>
  %0:2 = ds.split %c axis 1 sizes [12, 12] : tensor<?x24xf32> -> tensor<?x12xf32>, tensor<?x12xf32>
  return %0#0 : tensor<?x12xf32>
}

// -----

// A one-piece split is the identity.
// CHECK-LABEL: func.func @split_single
// CHECK-SAME: (%[[X:.+]]: tensor<?x8xf32>)
// CHECK-NEXT: return %[[X]]
func.func @split_single(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %0 = ds.split %x axis 1 sizes [8] : tensor<?x8xf32> -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

// Multiplying by a splat 1.0 of broadcast shape is the identity.
// CHECK-LABEL: func.func @mul_by_one
// CHECK-SAME: (%[[X:.+]]: tensor<?x8xf32>)
// CHECK-NEXT: return %[[X]], %[[X]]
func.func @mul_by_one(%x: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %one = arith.constant dense<1.0> : tensor<1x1xf32>
  %0 = ds.mul %x, %one : tensor<?x8xf32>, tensor<1x1xf32> -> tensor<?x8xf32>
  %1 = ds.mul %one, %x : tensor<1x1xf32>, tensor<?x8xf32> -> tensor<?x8xf32>
  return %0, %1 : tensor<?x8xf32>, tensor<?x8xf32>
}

// -----

// Multiplying by 2.0 is not folded.
// CHECK-LABEL: func.func @mul_by_two
// CHECK: ds.mul
func.func @mul_by_two(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %two = arith.constant dense<2.0> : tensor<1x1xf32>
  %0 = ds.mul %x, %two : tensor<?x8xf32>, tensor<1x1xf32> -> tensor<?x8xf32>
  return %0 : tensor<?x8xf32>
}

// -----

// A zero bias is dropped from ds.linear; a non-zero one stays.
// CHECK-LABEL: func.func @linear_zero_bias
// CHECK: ds.linear %{{.*}}, %{{.*}} : tensor<?x4xf32>, tensor<8x4xf32> -> tensor<?x8xf32>
// CHECK: ds.linear %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x4xf32>, tensor<8x4xf32>, tensor<8xf32> -> tensor<?x8xf32>
func.func @linear_zero_bias(%x: tensor<?x4xf32>, %w: tensor<8x4xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %zero = arith.constant dense<0.0> : tensor<8xf32>
  %half = arith.constant dense<0.5> : tensor<8xf32>
  %0 = ds.linear %x, %w, %zero : tensor<?x4xf32>, tensor<8x4xf32>, tensor<8xf32> -> tensor<?x8xf32>
  %1 = ds.linear %x, %w, %half : tensor<?x4xf32>, tensor<8x4xf32>, tensor<8xf32> -> tensor<?x8xf32>
  return %0, %1 : tensor<?x8xf32>, tensor<?x8xf32>
}

// -----

// Unused pure ops (params included) are erased; identical params are CSE'd by
// -cse, not by canonicalization, so both loads stay here.
// CHECK-LABEL: func.func @dead_params
// CHECK-NOT: ds.param "unused"
// CHECK-COUNT-2: ds.param "w"
func.func @dead_params() -> (tensor<4xf32>, tensor<4xf32>) {
  %u = ds.param "unused" : tensor<4xf32>
  %a = ds.param "w" : tensor<4xf32>
  %b = ds.param "w" : tensor<4xf32>
  return %a, %b : tensor<4xf32>, tensor<4xf32>
}
