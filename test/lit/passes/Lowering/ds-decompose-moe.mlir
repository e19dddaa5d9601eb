// RUN: ds-opt %s -ds-decompose-moe -split-input-file | FileCheck %s

// Flat [N, H] tokens: router on the gate projection, dispatch, gate/up grouped
// matmuls, SwiGLU, down grouped matmul, combine. No reshapes.
// CHECK-LABEL: func.func @flat
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[WR:[^:]+]]: tensor<4x16xf32>, %[[G:[^:]+]]: tensor<4x8x16xf32>, %[[U:[^:]+]]: tensor<4x8x16xf32>, %[[D:[^:]+]]: tensor<4x16x8xf32>)
// CHECK-NOT: tensor.collapse_shape
// CHECK: %[[L:.+]] = ds.linear %[[X]], %[[WR]] : tensor<?x16xf32>, tensor<4x16xf32> -> tensor<?x4xf32>
// CHECK: %[[W:.+]], %[[I:.+]] = ds.router %[[L]] {routing = #ds.routing<num_experts = 4, top_k = 2, norm_topk_prob = true>}
// CHECK: %[[S:.+]], %[[O:.+]], %[[R:.+]] = ds.moe_dispatch %[[X]], %[[I]] experts 4
// CHECK: %[[GM:.+]] = ds.grouped_matmul %[[S]], %[[G]], %[[O]]
// CHECK: %[[UM:.+]] = ds.grouped_matmul %[[S]], %[[U]], %[[O]]
// CHECK: %[[H:.+]] = ds.swiglu %[[GM]], %[[UM]] : tensor<?x8xf32>
// CHECK: %[[DM:.+]] = ds.grouped_matmul %[[H]], %[[D]], %[[O]] : tensor<?x8xf32>, tensor<4x16x8xf32>, tensor<5xi64> -> tensor<?x16xf32>
// CHECK: %[[Y:.+]] = ds.moe_combine %[[DM]], %[[W]], %[[R]]
// CHECK-NOT: ds.moe
// CHECK: return %[[Y]]
func.func @flat(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2, norm_topk_prob = true>}
      : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// [B, S, H] is collapsed to tokens and expanded back with the dynamic sizes;
// the score-correction bias reaches the router; the activation is kept.
// CHECK-LABEL: func.func @batched
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x?x16xf32>
// CHECK: %[[F:.+]] = tensor.collapse_shape %[[X]] {{\[}}[0, 1], [2]] : tensor<?x?x16xf32> into tensor<?x16xf32>
// CHECK: ds.router %{{.*}} bias %{{.*}} {routing = #ds.routing<num_experts = 4, top_k = 1, scoring = sigmoid>}
// CHECK: ds.moe_dispatch %[[F]]
// CHECK: ds.swiglu {{.*}} {activation = #ds.activation<gelu_tanh>}
// CHECK: %[[Y:.+]] = ds.moe_combine
// CHECK-DAG: %[[D0:.+]] = tensor.dim %[[X]], %c0
// CHECK-DAG: %[[D1:.+]] = tensor.dim %[[X]], %c1
// CHECK: %[[E:.+]] = tensor.expand_shape %[[Y]] {{\[}}[0, 1], [2]] output_shape [%[[D0]], %[[D1]], 16]
// CHECK: return %[[E]]
func.func @batched(%x: tensor<?x?x16xf32>, %wr: tensor<4x16xf32>, %b: tensor<4xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<?x?x16xf32> {
  %y = ds.moe %x router %wr bias %b experts(%g, %u, %d) {activation = #ds.activation<gelu_tanh>, routing = #ds.routing<num_experts = 4, top_k = 1, scoring = sigmoid>}
      : (tensor<?x?x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}

// -----

// The shared expert runs on the same flattened tokens and is added to the
// routed sum; with a shared_expert_gate it is first scaled by the sigmoid of
// its own [N, 1] projection.
// CHECK-LABEL: func.func @shared_gated
// CHECK: %[[Y:.+]] = ds.moe_combine
// CHECK: %[[SG:.+]] = ds.linear %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<12x16xf32> -> tensor<?x12xf32>
// CHECK: %[[SU:.+]] = ds.linear %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<12x16xf32> -> tensor<?x12xf32>
// CHECK: %[[SH:.+]] = ds.swiglu %[[SG]], %[[SU]]
// CHECK: %[[SD:.+]] = ds.linear %[[SH]], %{{.*}} : tensor<?x12xf32>, tensor<16x12xf32> -> tensor<?x16xf32>
// CHECK: %[[GL:.+]] = ds.linear %{{.*}}, %{{.*}} : tensor<?x16xf32>, tensor<1x16xf32> -> tensor<?x1xf32>
// CHECK: %[[GS:.+]] = ds.activation sigmoid %[[GL]]
// CHECK: %[[GM:.+]] = ds.mul %[[SD]], %[[GS]]
// CHECK: %[[SUM:.+]] = arith.addf %[[Y]], %[[GM]] : tensor<?x16xf32>
// CHECK: return %[[SUM]]
func.func @shared_gated(%x: tensor<?x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>,
                        %sg: tensor<12x16xf32>, %su: tensor<12x16xf32>, %sd: tensor<16x12xf32>, %seg: tensor<1x16xf32>) -> tensor<?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) shared_expert_gate %seg {routing = #ds.routing<num_experts = 4, top_k = 2>}
      : (tensor<?x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<12x16xf32>, tensor<12x16xf32>, tensor<16x12xf32>, tensor<1x16xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

// -----

// Static shapes: the N * k dispatch rows are static too; no dims are needed.
// CHECK-LABEL: func.func @static
// CHECK: tensor.collapse_shape {{.*}} : tensor<2x3x16xf32> into tensor<6x16xf32>
// CHECK: ds.moe_dispatch {{.*}} -> tensor<12x16xf32>, tensor<5xi64>, tensor<12xi64>
// CHECK-NOT: tensor.dim
// CHECK: tensor.expand_shape {{.*}} output_shape [2, 3, 16] : tensor<6x16xf32> into tensor<2x3x16xf32>
func.func @static(%x: tensor<2x3x16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<2x3x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>}
      : (tensor<2x3x16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<2x3x16xf32>
  return %y : tensor<2x3x16xf32>
}

// -----

// A single token [H] gains a unit token axis and loses it again.
// CHECK-LABEL: func.func @one_token
// CHECK: tensor.expand_shape {{.*}} {{\[}}[0, 1]] output_shape [1, 16] : tensor<16xf32> into tensor<1x16xf32>
// CHECK: ds.moe_combine {{.*}} -> tensor<1x16xf32>
// CHECK: tensor.collapse_shape {{.*}} {{\[}}[0, 1]] : tensor<1x16xf32> into tensor<16xf32>
func.func @one_token(%x: tensor<16xf32>, %wr: tensor<4x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>) -> tensor<16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 4, top_k = 2>}
      : (tensor<16xf32>, tensor<4x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<16xf32>
  return %y : tensor<16xf32>
}

// -----

// A process's block of the experts (expert parallelism): routing over all 8
// experts, then the fused kernel over the block (gate and up concatenated),
// which takes the block's grid; the shared expert stays unfused beside it.
// CHECK-LABEL: func.func @expert_block
// CHECK-SAME: (%[[X:[^:]+]]: tensor<?x16xf32>, %[[WR:[^:]+]]: tensor<8x16xf32>, %[[G:[^:]+]]: tensor<4x8x16xf32>, %[[U:[^:]+]]: tensor<4x8x16xf32>, %[[D:[^:]+]]: tensor<4x16x8xf32>
// CHECK: %[[L:.+]] = ds.linear %[[X]], %[[WR]]
// CHECK: %[[W:.+]], %[[I:.+]] = ds.router %[[L]] {routing = #ds.routing<num_experts = 8, top_k = 2>}
// CHECK-NOT: ds.moe_dispatch
// CHECK: %[[GU:.+]] = tensor.concat dim(1) %[[G]], %[[U]] : (tensor<4x8x16xf32>, tensor<4x8x16xf32>) -> tensor<4x16x16xf32>
// CHECK: %[[Y:.+]] = ds.fused_moe %[[X]], %[[W]], %[[I]] experts(%[[GU]], %[[D]]) {expert_grid = @grid, expert_grid_axes = array<i16: 0>}
// CHECK: ds.swiglu
// CHECK: %[[S:.+]] = ds.linear
// CHECK: %[[R:.+]] = arith.addf %[[Y]], %[[S]]
// CHECK: return %[[R]]
shard.grid @grid(shape = 2)
func.func @expert_block(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %g: tensor<4x8x16xf32>, %u: tensor<4x8x16xf32>, %d: tensor<4x16x8xf32>, %sg: tensor<6x16xf32>, %su: tensor<6x16xf32>, %sd: tensor<16x6xf32>) -> tensor<?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) {routing = #ds.routing<num_experts = 8, top_k = 2>, expert_grid = @grid, expert_grid_axes = array<i16: 0>}
      : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<4x8x16xf32>, tensor<4x8x16xf32>, tensor<4x16x8xf32>, tensor<6x16xf32>, tensor<6x16xf32>, tensor<16x6xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
