// RUN: ds-opt %s -ds-fuse-linear -split-input-file | FileCheck %s

// A dense SwiGLU MLP block: RMSNorm prologue and GLU epilogue on the merged
// gate/up linear, residual epilogue on the down projection.
// CHECK-LABEL: func.func @mlp_block
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[LN:[^:]+]]: tensor<16xf32>, %[[GU:[^:]+]]: tensor<24x16xf32>, %[[D:[^:]+]]: tensor<16x12xf32>)
// CHECK: %[[H:.+]] = ds.fused_linear %[[X]], %[[GU]] norm(%[[LN]]) {activation = #ds.activation<silu>, gated, norm_epsilon = 1.000000e-05 : f64} : (tensor<?x16xf32>, tensor<24x16xf32>, tensor<16xf32>) -> tensor<?x12xf32>
// CHECK: %[[Y:.+]] = ds.fused_linear %[[H]], %[[D]] residual(%[[X]]) : (tensor<?x12xf32>, tensor<16x12xf32>, tensor<?x16xf32>) -> tensor<?x16xf32>
// CHECK: return %[[Y]]
func.func @mlp_block(%x: tensor<?x16xf32>, %ln: tensor<16xf32>, %gu: tensor<24x16xf32>, %d: tensor<16x12xf32>) -> tensor<?x16xf32> {
  %n = ds.rms_norm %x, %ln {epsilon = 1.0e-05 : f64} : tensor<?x16xf32>, tensor<16xf32>
  %m = ds.linear %n, %gu : tensor<?x16xf32>, tensor<24x16xf32> -> tensor<?x24xf32>
  %g, %u = ds.split %m axis 1 sizes [12, 12] : tensor<?x24xf32> -> tensor<?x12xf32>, tensor<?x12xf32>
  %h = ds.swiglu %g, %u : tensor<?x12xf32>
  %o = ds.linear %h, %d : tensor<?x12xf32>, tensor<16x12xf32> -> tensor<?x16xf32>
  %y = arith.addf %x, %o : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// An activation epilogue, then a residual on the other side of the add.
// CHECK-LABEL: func.func @activation_then_residual
// CHECK: %[[A:.+]] = ds.fused_linear %{{.*}}, %{{.*}} bias(%{{.*}}) residual(%{{.*}}) {activation = #ds.activation<gelu>}
// CHECK-NEXT: return %[[A]]
func.func @activation_then_residual(%x: tensor<?x16xf32>, %w: tensor<16x16xf32>, %b: tensor<16xf32>, %r: tensor<?x16xf32>) -> tensor<?x16xf32> {
  %l = ds.linear %x, %w, %b : tensor<?x16xf32>, tensor<16x16xf32>, tensor<16xf32> -> tensor<?x16xf32>
  %a = ds.activation gelu %l : tensor<?x16xf32>
  %y = arith.addf %a, %r : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A norm with two users is not folded into either (it would be computed twice);
// a three-way split is not a GLU.
// CHECK-LABEL: func.func @not_fused
// CHECK: ds.rms_norm
// CHECK-COUNT-2: ds.linear
// CHECK: ds.swiglu
func.func @not_fused(%x: tensor<?x16xf32>, %ln: tensor<16xf32>, %w: tensor<8x16xf32>, %w2: tensor<8x16xf32>) -> (tensor<?x8xf32>, tensor<?x2xf32>) {
  %n = ds.rms_norm %x, %ln {epsilon = 1.0e-05 : f64} : tensor<?x16xf32>, tensor<16xf32>
  %a = ds.linear %n, %w : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %b = ds.linear %n, %w2 : tensor<?x16xf32>, tensor<8x16xf32> -> tensor<?x8xf32>
  %g, %u, %v = ds.split %b axis 1 sizes [2, 2, 4] : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xf32>, tensor<?x4xf32>
  %h = ds.swiglu %g, %u : tensor<?x2xf32>
  return %a, %h : tensor<?x8xf32>, tensor<?x2xf32>
}

// -----

// Activation quantization joins the fused linear (the kernel quantizes the
// normalized input itself), and so does the RMSNorm before it.
// CHECK-LABEL: func.func @quantized_input
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[LN:[^:]+]]: tensor<16xf32>, %[[W:[^:]+]]: !ds.qtensor
// CHECK-NOT: ds.quantize
// CHECK: %[[Y:.+]] = ds.fused_linear %[[X]], %[[W]] norm(%[[LN]]) residual(%[[X]]) {input_quant = #ds.act_quant<i8, group = 0>, norm_epsilon = 1.000000e-05 : f64} : (tensor<?x16xf32>, !ds.qtensor<16x16xi8, f32, block = [1, 0]>, tensor<16xf32>, tensor<?x16xf32>) -> tensor<?x16xf32>
// CHECK-NEXT: return %[[Y]]
func.func @quantized_input(%x: tensor<?x16xf32>, %ln: tensor<16xf32>, %w: !ds.qtensor<16x16xi8, f32, block = [1, 0]>) -> tensor<?x16xf32> {
  %n = ds.rms_norm %x, %ln {epsilon = 1.0e-05 : f64} : tensor<?x16xf32>, tensor<16xf32>
  %q = ds.quantize %n {scheme = #ds.act_quant<i8, group = 0>} : tensor<?x16xf32> -> !ds.qtensor<?x16xi8, f32, block = [1, 0]>
  %l = ds.linear %q, %w : !ds.qtensor<?x16xi8, f32, block = [1, 0]>, !ds.qtensor<16x16xi8, f32, block = [1, 0]> -> tensor<?x16xf32>
  %y = arith.addf %x, %l : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// A quantized input shared by two GEMMs: each quantizes for itself and the
// ds.quantize goes away.
// CHECK-LABEL: func.func @shared_quantized_input
// CHECK-NOT: ds.quantize
// CHECK-COUNT-2: ds.fused_linear %{{.*}}, %{{.*}} {input_quant = #ds.act_quant<f8E4M3FN, group = 128>}
func.func @shared_quantized_input(%x: tensor<?x16xf32>, %w: !ds.qtensor<16x16xf8E4M3FN, f32, block = [128, 128]>) -> (tensor<?x16xf32>, tensor<?x16xf32>) {
  %q = ds.quantize %x {scheme = #ds.act_quant<f8E4M3FN, group = 128>} : tensor<?x16xf32> -> !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>
  %a = ds.linear %q, %w : !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>, !ds.qtensor<16x16xf8E4M3FN, f32, block = [128, 128]> -> tensor<?x16xf32>
  %b = ds.linear %q, %w : !ds.qtensor<?x16xf8E4M3FN, f32, block = [1, 128]>, !ds.qtensor<16x16xf8E4M3FN, f32, block = [128, 128]> -> tensor<?x16xf32>
  return %a, %b : tensor<?x16xf32>, tensor<?x16xf32>
}
