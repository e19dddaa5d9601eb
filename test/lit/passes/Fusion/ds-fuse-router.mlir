// RUN: ds-opt %s -ds-fuse-router -split-input-file | FileCheck %s

// The gate projection folds into the router.
// CHECK-LABEL: func.func @fold
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[W:[^:]+]]: tensor<8x16xf32>, %[[B:[^:]+]]: tensor<8xf32>)
// CHECK-NOT: ds.linear
// CHECK: %[[RW:.+]], %[[RI:.+]] = ds.fused_router %[[X]], %[[W]] bias %[[B]] {routing = #ds.routing<num_experts = 8, top_k = 2, scoring = sigmoid>} : tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
// CHECK: return %[[RW]], %[[RI]]
func.func @fold(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %b: tensor<8xf32>) -> (tensor<?x2xf32>, tensor<?x2xi32>) {
  %l = ds.linear %x, %w : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %r:2 = ds.router %l bias %b {routing = #ds.routing<num_experts = 8, top_k = 2, scoring = sigmoid>} : tensor<?x8xf32>, tensor<8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %r#0, %r#1 : tensor<?x2xf32>, tensor<?x2xi32>
}

// -----

// Logits used elsewhere, or a gate with a bias, stay apart.
// CHECK-LABEL: func.func @kept
// CHECK-COUNT-2: ds.router
// CHECK-NOT: ds.fused_router
func.func @kept(%x: tensor<?x16xf32>, %w: tensor<8x16xf32>, %gb: tensor<8xf32>) -> (tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xi32>) {
  %l = ds.linear %x, %w : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %r:2 = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  %l2 = ds.linear %x, %w, %gb : tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32> -> tensor<?x8xf32>
  %r2:2 = ds.router %l2 {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  return %l, %r#1, %r2#1 : tensor<?x8xf32>, tensor<?x2xi32>, tensor<?x2xi32>
}

// -----

// bf16 logits are not fused (the fused router computes them in f32); a
// fused router keeps the routers' static result types.
// CHECK-LABEL: func.func @types
// CHECK: ds.linear {{.*}} -> tensor<?x8xbf16>
// CHECK: ds.router
// CHECK: ds.fused_router {{.*}} -> tensor<16x2xf32>, tensor<16x2xi32>
func.func @types(%x: tensor<?x16xbf16>, %w: tensor<8x16xbf16>, %y: tensor<?x16xf32>, %w2: tensor<8x16xf32>) -> (tensor<?x2xi32>, tensor<16x2xf32>, tensor<16x2xi32>) {
  %l = ds.linear %x, %w : tensor<?x16xbf16>, tensor<8x16xbf16> -> tensor<?x8xbf16>
  %r:2 = ds.router %l {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xbf16> -> tensor<?x2xf32>, tensor<?x2xi32>
  %l2 = ds.linear %y, %w2 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<16x8xf32>
  %r2:2 = ds.router %l2 {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<16x8xf32> -> tensor<16x2xf32>, tensor<16x2xi32>
  return %r#1, %r2#0, %r2#1 : tensor<?x2xi32>, tensor<16x2xf32>, tensor<16x2xi32>
}
