// RUN: ds-opt %s --ds-partition=pp=2 | FileCheck %s
// RUN: ds-opt %s --ds-partition=pp=2 | ds-opt | FileCheck %s
// RUN: ds-opt %s "--ds-partition=pp=2 tp=2" | FileCheck %s --check-prefix=TP
// RUN: ds-opt %s "--ds-partition=pp=2 print-collectives" -o /dev/null 2>&1 | FileCheck %s --check-prefix=REMARK
// RUN: ds-opt %s --ds-partition=pp=1 | FileCheck %s --check-prefix=PP1
// RUN: not ds-opt %s --ds-partition=pp=3 2>&1 | FileCheck %s --check-prefix=TOOMANY

// Pipeline parallelism: two layers, two stages. Stage 0 looks up the
// embedding and runs layer 0; the residual stream crosses to stage 1 (the
// only value live between the layers), which runs layer 1 and the LM head.
// Each stage takes the token ids, the positions and its own layer's caches;
// the whole function stays a declaration that lists the stages.

// CHECK: shard.grid @grid(shape = 2)
// CHECK: func.func private @prefill(tensor<?x?xi64>, tensor<?x?xi64>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>) -> (tensor<?x?x32xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>)
// CHECK-SAME: ds.pipeline_axis = 0 : i64, ds.pipeline_stages = [@prefill.stage0, @prefill.stage1]

// CHECK-LABEL: func.func @prefill.stage0(
// CHECK-SAME: %[[TOK:[^:]*]]: tensor<?x?xi64> {ds.pipeline_arg = 0 : i64}
// CHECK-SAME: %[[POS:[^:]*]]: tensor<?x?xi64> {ds.pipeline_arg = 1 : i64}
// CHECK-SAME: tensor<?x8x2x16xf32> {ds.pipeline_arg = 2 : i64}
// CHECK-SAME: tensor<?x8x2x16xf32> {ds.pipeline_arg = 3 : i64})
// CHECK-SAME: -> (tensor<?x8x2x16xf32> {ds.pipeline_result = 1 : i64}, tensor<?x8x2x16xf32> {ds.pipeline_result = 2 : i64})
// CHECK: ds.embedding
// CHECK: "model.layers.0.self_attn.q_proj.weight"
// CHECK-NOT: model.layers.1
// CHECK: %[[H:.*]] = arith.addf
// CHECK-NEXT: shard.send %[[H]] on @grid grid_axes = [0] destination = [1] : (tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
// CHECK-NEXT: return

// CHECK-LABEL: func.func @prefill.stage1(
// CHECK-SAME: %[[TOK1:[^:]*]]: tensor<?x?xi64> {ds.pipeline_arg = 0 : i64}
// CHECK-SAME: tensor<?x8x2x16xf32> {ds.pipeline_arg = 4 : i64}
// CHECK-SAME: tensor<?x8x2x16xf32> {ds.pipeline_arg = 5 : i64})
// CHECK-SAME: -> (tensor<?x?x32xf32> {ds.pipeline_result = 0 : i64}, tensor<?x8x2x16xf32> {ds.pipeline_result = 3 : i64}, tensor<?x8x2x16xf32> {ds.pipeline_result = 4 : i64})
// CHECK-DAG: %[[B:.*]] = tensor.dim %[[TOK1]], %c0
// CHECK-DAG: %[[T:.*]] = tensor.dim %[[TOK1]], %c1
// CHECK: %[[E:.*]] = tensor.empty(%[[B]], %[[T]]) : tensor<?x?x64xf32>
// CHECK: %[[R:.*]] = shard.recv %[[E]] on @grid grid_axes = [0] source = [0] : (tensor<?x?x64xf32>) -> tensor<?x?x64xf32>
// CHECK-NOT: ds.embedding
// CHECK: ds.rms_norm %[[R]]
// CHECK: "model.layers.1.self_attn.q_proj.weight"
// CHECK: "lm_head.weight"

// With tensor parallelism inside each stage, the grid is [pp, tp]: the
// stage's all-reduces are over tp (axis 1), the sends over pp (axis 0).
// TP: shard.grid @grid(shape = 2x2)
// TP-LABEL: func.func @prefill.stage0(
// TP: shard.all_reduce {{.*}} grid_axes = [1]
// TP: shard.send {{.*}} grid_axes = [0] destination = [1]
// TP-LABEL: func.func @prefill.stage1(
// TP: shard.recv {{.*}} grid_axes = [0] source = [0]
// TP: shard.all_gather {{.*}} grid_axes = [1] gather_axis = 2

// REMARK: remark: ds-partition: @prefill.stage0: 0 all-reduces of 0 values per token in all, 0 all-gathers of 0 values per token, 0 receives from the previous pipeline stage, 1 sends of 64 values per token to the next
// REMARK: remark: ds-partition: @prefill.stage1: 0 all-reduces of 0 values per token in all, 0 all-gathers of 0 values per token, 1 receives from the previous pipeline stage, 0 sends of 0 values per token to the next

// PP1-NOT: shard.
// PP1: func.func @prefill(

// TOOMANY: error: ds-partition: @prefill has 2 layers (attention ops), fewer than pp = 3 pipeline stages

func.func @prefill(%tokens: tensor<?x?xi64>, %pos: tensor<?x?xi64>,
                   %k0: tensor<?x8x2x16xf32>, %v0: tensor<?x8x2x16xf32>,
                   %k1: tensor<?x8x2x16xf32>, %v1: tensor<?x8x2x16xf32>)
    -> (tensor<?x?x32xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>,
        tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>) {
  %table = ds.param "model.embed_tokens.weight" : tensor<32x64xf32>
  %x = ds.embedding %table[%tokens] : tensor<32x64xf32>, tensor<?x?xi64> -> tensor<?x?x64xf32>

  %ln0 = ds.param "model.layers.0.input_layernorm.weight" : tensor<64xf32>
  %h0 = ds.rms_norm %x, %ln0 {epsilon = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wq0 = ds.param "model.layers.0.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wk0 = ds.param "model.layers.0.self_attn.k_proj.weight" : tensor<32x64xf32>
  %wv0 = ds.param "model.layers.0.self_attn.v_proj.weight" : tensor<32x64xf32>
  %q0 = ds.linear %h0, %wq0 : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %kk0 = ds.linear %h0, %wk0 : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %vv0 = ds.linear %h0, %wv0 : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %qh0 = ds.split_heads %q0 into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh0 = ds.split_heads %kk0 into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %vh0 = ds.split_heads %vv0 into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %kc0 = ds.cache_update %k0[%pos], %kh0 : tensor<?x8x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %vc0 = ds.cache_update %v0[%pos], %vh0 : tensor<?x8x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %a0 = ds.attention %qh0, %kc0, %vc0, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %m0 = ds.merge_heads %a0 : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %wo0 = ds.param "model.layers.0.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o0 = ds.linear %m0, %wo0 : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %r0 = arith.addf %x, %o0 : tensor<?x?x64xf32>

  %ln1 = ds.param "model.layers.1.input_layernorm.weight" : tensor<64xf32>
  %h1 = ds.rms_norm %r0, %ln1 {epsilon = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %wq1 = ds.param "model.layers.1.self_attn.q_proj.weight" : tensor<64x64xf32>
  %wk1 = ds.param "model.layers.1.self_attn.k_proj.weight" : tensor<32x64xf32>
  %wv1 = ds.param "model.layers.1.self_attn.v_proj.weight" : tensor<32x64xf32>
  %q1 = ds.linear %h1, %wq1 : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %kk1 = ds.linear %h1, %wk1 : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %vv1 = ds.linear %h1, %wv1 : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  %qh1 = ds.split_heads %q1 into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  %kh1 = ds.split_heads %kk1 into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %vh1 = ds.split_heads %vv1 into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
  %kc1 = ds.cache_update %k1[%pos], %kh1 : tensor<?x8x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %vc1 = ds.cache_update %v1[%pos], %vh1 : tensor<?x8x2x16xf32>, tensor<?x?xi64>, tensor<?x?x2x16xf32>
  %a1 = ds.attention %qh1, %kc1, %vc1, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  %m1 = ds.merge_heads %a1 : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  %wo1 = ds.param "model.layers.1.self_attn.o_proj.weight" : tensor<64x64xf32>
  %o1 = ds.linear %m1, %wo1 : tensor<?x?x64xf32>, tensor<64x64xf32> -> tensor<?x?x64xf32>
  %r1 = arith.addf %r0, %o1 : tensor<?x?x64xf32>

  %lnf = ds.param "model.norm.weight" : tensor<64xf32>
  %f = ds.rms_norm %r1, %lnf {epsilon = 1.0e-05 : f64} : tensor<?x?x64xf32>, tensor<64xf32>
  %head = ds.param "lm_head.weight" : tensor<32x64xf32>
  %logits = ds.linear %f, %head : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  return %logits, %kc0, %vc0, %kc1, %vc1 : tensor<?x?x32xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>, tensor<?x8x2x16xf32>
}
