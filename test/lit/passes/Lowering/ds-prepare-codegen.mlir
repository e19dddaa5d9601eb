// RUN: ds-opt %s -ds-prepare-codegen -split-input-file | FileCheck %s

// A lone activation becomes a single-op ds.fused_elementwise.
// CHECK-LABEL: func.func @lone
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x8xf32>)
// CHECK: %[[F:.+]] = ds.fused_elementwise %[[X]] : (tensor<?x8xf32>) -> tensor<?x8xf32> {
// CHECK: math.exp
// CHECK: ds.yield
// CHECK-NOT: ds.activation
// CHECK: return %[[F]]
func.func @lone(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %y = ds.activation silu %x : tensor<?x8xf32>
  return %y : tensor<?x8xf32>
}

// -----

// A chain (broadcast ds.mul, two adds) is fused into one op, not wrapped op
// by op.
// CHECK-LABEL: func.func @chain
// CHECK: ds.fused_elementwise
// CHECK-NOT: ds.fused_elementwise
// CHECK-NOT: arith.addf {{.*}} : tensor
// CHECK: return
func.func @chain(%x: tensor<?x16xf32>, %r: tensor<?x16xf32>, %s: tensor<?x16xf32>, %g: tensor<?x1xf32>) -> tensor<?x16xf32> {
  %m = ds.mul %s, %g : tensor<?x16xf32>, tensor<?x1xf32> -> tensor<?x16xf32>
  %a = arith.addf %r, %m : tensor<?x16xf32>
  %y = arith.addf %x, %a : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Ops that are not elementwise stay as they are; the residual add after the
// linear is wrapped on its own.
// CHECK-LABEL: func.func @around_linear
// CHECK: %[[L:.+]] = ds.linear
// CHECK: %[[F:.+]] = ds.fused_elementwise %{{.*}}, %[[L]]
// CHECK: return %[[F]]
func.func @around_linear(%x: tensor<?x4xf32>, %w: tensor<4x4xf32>) -> tensor<?x4xf32> {
  %l = ds.linear %x, %w : tensor<?x4xf32>, tensor<4x4xf32> -> tensor<?x4xf32>
  %y = arith.addf %x, %l : tensor<?x4xf32>
  return %y : tensor<?x4xf32>
}
