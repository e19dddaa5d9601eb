// RUN: ds-opt %s -ds-fuse-moe -split-input-file | FileCheck %s

// Separate gate and up grouped matmuls: their weights are stacked.
// CHECK-LABEL: func.func @separate
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[I:[^:]+]]: tensor<?x2xi32>, %[[W:[^:]+]]: tensor<?x2xf32>, %[[G:[^:]+]]: tensor<4x8x16xf32>, %[[U:[^:]+]]: tensor<4x8x16xf32>, %[[D:[^:]+]]: tensor<4x16x8xf32>)
// CHECK: %[[GU:.+]] = tensor.concat dim(1) %[[G]], %[[U]] : (tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> tensor<4x16x16xf32>
// CHECK: %[[Y:.+]] = ds.fused_moe %[[X]], %[[W]], %[[I]] experts(%[[GU]], %[[D]]) {activation = #ds.activation<gelu>}
// CHECK-NOT: ds.moe_dispatch
// CHECK-NOT: ds.grouped_matmul
// CHECK: return %[[Y]]
func.func @separate(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  %a = ds.grouped_matmul %s, %g, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %b = ds.grouped_matmul %s, %u, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %h = ds.swiglu %a, %b {activation = #ds.activation<gelu>} : tensor<?x8xf32>
  %dn = ds.grouped_matmul %h, %d, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  %y = ds.moe_combine %dn, %w, %r : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Gate and up already merged (ds-fuse-horizontal): the stacked weight is used as is.
// CHECK-LABEL: func.func @merged
// CHECK-NOT: tensor.concat
// CHECK: ds.fused_moe %{{.*}}, %{{.*}}, %{{.*}} experts(%{{.*}}, %{{.*}}) : (tensor<?x16xf32>, tensor<?x2xf32>, tensor<?x2xi32>, tensor<4x16x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
func.func @merged(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %gu: tensor<4x16x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  %m = ds.grouped_matmul %s, %gu, %o : tensor<?x16xf32>, tensor<4x16x16xf32>, tensor<5xi64> -> tensor<?x16xf32>
  %a, %b = ds.split %m axis 1 sizes [8, 8] : tensor<?x16xf32> -> tensor<?x8xf32>, tensor<?x8xf32>
  %h = ds.swiglu %a, %b : tensor<?x8xf32>
  %dn = ds.grouped_matmul %h, %d, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  %y = ds.moe_combine %dn, %w, %r : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// An intermediate with another user blocks the fusion.
// CHECK-LABEL: func.func @shared_intermediate
// CHECK-NOT: ds.fused_moe
// CHECK: ds.moe_combine
func.func @shared_intermediate(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> (tensor<?x16xf32>, tensor<?x8xf32>) {
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  %a = ds.grouped_matmul %s, %g, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %b = ds.grouped_matmul %s, %u, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %h = ds.swiglu %a, %b : tensor<?x8xf32>
  %dn = ds.grouped_matmul %h, %d, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  %y = ds.moe_combine %dn, %w, %r : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return %y, %h : tensor<?x16xf32>, tensor<?x8xf32>
}

// -----

// Dispatch offsets used outside the chain: nothing is fused and nothing is
// left behind (the pass converges).
// CHECK-LABEL: func.func @offsets_escape
// CHECK-NOT: tensor.concat
// CHECK-NOT: ds.fused_moe
// CHECK: ds.moe_combine
func.func @offsets_escape(%x: tensor<?x16xf32>, %i: tensor<?x2xi32>, %w: tensor<?x2xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> (tensor<?x16xf32>, tensor<5xi64>) {
  %s, %o, %r = ds.moe_dispatch %x, %i experts 4 : tensor<?x16xf32>, tensor<?x2xi32> -> tensor<?x16xf32>, tensor<5xi64>, tensor<?xi64>
  %a = ds.grouped_matmul %s, %g, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %b = ds.grouped_matmul %s, %u, %o : tensor<?x16xf32>, tensor<4x8x16xf32>, tensor<5xi64> -> tensor<?x8xf32>
  %h = ds.swiglu %a, %b : tensor<?x8xf32>
  %dn = ds.grouped_matmul %h, %d, %o : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
  %y = ds.moe_combine %dn, %w, %r : tensor<?x16xf32>, tensor<?x2xf32>, tensor<?xi64> -> tensor<?x16xf32>
  return %y, %o : tensor<?x16xf32>, tensor<5xi64>
}
