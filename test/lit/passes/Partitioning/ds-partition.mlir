// RUN: ds-opt %S/../../examples/mixtral_layer.mlir --ds-partition=tp=2 | FileCheck %s --check-prefix=GQA
// RUN: ds-opt %S/../../examples/qwen2_moe_layer.mlir --ds-partition=tp=2 | FileCheck %s --check-prefix=BIAS
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir --ds-partition=tp=2 | FileCheck %s --check-prefix=MLA
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir --ds-partition="tp=2 ep=2" | FileCheck %s --check-prefix=EP
// RUN: ds-opt %S/../../examples/mixtral_layer.mlir --ds-partition=ep=4 | FileCheck %s --check-prefix=EP4
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir --ds-partition="tp=2 ep=2" --ds-decompose-moe | FileCheck %s --check-prefix=EPDEC
// RUN: ds-opt %S/../../examples/mixtral_layer.mlir --ds-partition="dp=2 tp=2" | FileCheck %s --check-prefix=DP
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir "--ds-partition=dp=2 moe-all-to-all" | FileCheck %s --check-prefix=A2A
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir "--ds-partition=dp=2 moe-all-to-all" --ds-decompose-moe | FileCheck %s --check-prefix=A2ADEC
// RUN: ds-opt %S/../../examples/deepseek_v3_layer.mlir "--ds-partition=dp=2 moe-all-to-all print-collectives" -o /dev/null 2>&1 | FileCheck %s --check-prefix=A2AREMARK
// A2AREMARK: ds-partition: @{{.*}}: 0 all-reduces of 0 values per token in all, 0 all-gathers of 0 values per token, 1 MoE all-to-all pairs moving at most {{[0-9]+}} values per token
// RUN: ds-opt %S/../../examples/mixtral_layer.mlir --ds-partition=tp=4 | FileCheck %s --check-prefix=REPKV
// REPKV-LABEL: func.func @mixtral_prefill
// REPKV: ds.param "model.layers.0.self_attn.k_proj.weight" select [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, {{.*}}, 15, 16, 17, {{.*}}, 31, 16, {{.*}}, 31] sharded @grid {{\[\[}}0]] : tensor<16x64xf32>
// REPKV: ds.split_heads {{.*}} into 1 : tensor<?x?x16xf32> -> tensor<?x?x1x16xf32>
// REPKV: ds.attention {{.*}} : tensor<?x?x1x16xf32>, tensor<?x?x1x16xf32>, tensor<?x?x1x16xf32>, tensor<?x?xi64> -> tensor<?x?x1x16xf32>
// RUN: ds-opt %s --ds-partition=tp=2 | FileCheck %s
// RUN: ds-opt %s --ds-partition=tp=1 | FileCheck %s --check-prefix=TP1
// RUN: ds-opt %s "--ds-partition=tp=2 print-collectives" -o /dev/null 2>&1 | FileCheck %s --check-prefix=REMARK
// REMARK: remark: ds-partition: @dense_and_head: 2 all-reduces of 32 values per token in all, 1 all-gathers of 32 values per token
// REMARK-SAME: ; this process holds 832 weight values (0.00 GiB as typed here) and 0 KV cache values per token of a sequence
// RUN: ds-opt %s "--ds-partition=tp=2 split-embedding=false" | FileCheck %s --check-prefix=NOSPLIT
// RUN: ds-opt %s --ds-partition=tp=2 | ds-opt | FileCheck %s

// Tensor parallelism, Megatron-style: column-parallel Q/K/V (a GQA KV head
// with its query group), heads divided, row-parallel O followed by one
// all-reduce; the MoE block's experts split along their intermediate size
// with one all-reduce after the block; caches are the process's heads.
// GQA: shard.grid @grid(shape = 2)
// GQA-LABEL: func.func @mixtral_prefill
// GQA: ds.param "model.layers.0.self_attn.q_proj.weight" sharded @grid {{\[\[}}0]] : tensor<32x64xf32>
// GQA: ds.param "model.layers.0.self_attn.k_proj.weight" sharded @grid {{\[\[}}0]] : tensor<16x64xf32>
// GQA: ds.split_heads {{.*}} into 2 : tensor<?x?x32xf32> -> tensor<?x?x2x16xf32>
// GQA: ds.split_heads {{.*}} into 1 : tensor<?x?x16xf32> -> tensor<?x?x1x16xf32>
// GQA: ds.attention {{.*}} -> tensor<?x?x2x16xf32>
// GQA: ds.merge_heads {{.*}} -> tensor<?x?x32xf32>
// GQA: ds.param "model.layers.0.self_attn.o_proj.weight" sharded @grid {{\[\[}}], [0]] : tensor<64x32xf32>
// GQA: %[[O:.*]] = ds.linear {{.*}} -> tensor<?x?x64xf32>
// GQA-NEXT: %[[R:.*]] = shard.all_reduce %[[O]] on @grid grid_axes = [0] : tensor<?x?x64xf32> -> tensor<?x?x64xf32>
// GQA-NEXT: arith.addf %arg0, %[[R]]
// GQA: ds.param "model.layers.0.block_sparse_moe.gate.weight" : tensor<8x64xf32>
// GQA: ds.param "model.layers.0.block_sparse_moe.experts.*.w1.weight" sharded @grid {{\[\[}}], [0]] : tensor<8x16x64xf32>
// GQA: ds.param "model.layers.0.block_sparse_moe.experts.*.w2.weight" sharded @grid {{\[\[}}], [], [0]] : tensor<8x64x16xf32>
// GQA: %[[M:.*]] = ds.moe
// GQA-NEXT: shard.all_reduce %[[M]] on @grid grid_axes = [0]
// GQA-LABEL: func.func @mixtral_attention_decode
// GQA-SAME: tensor<?x256x1x16xf32> {ds.split_axes = #shard<axisarray{{\[\[}}], [], [0]]>}
// GQA-SAME: -> (tensor<?x1x64xf32>, tensor<?x256x1x16xf32> {ds.split_axes = #shard<axisarray{{\[\[}}], [], [0]]>}
// GQA: ds.cache_update {{.*}} : tensor<?x256x1x16xf32>, tensor<?x1xi64>, tensor<?x1x1x16xf32>

// Column-parallel biases split with their projection; the shared expert
// splits like the routed ones and its sigmoid gate stays whole.
// BIAS: ds.param "model.layers.0.self_attn.q_proj.bias" sharded @grid {{\[\[}}0]] : tensor<32xf32>
// BIAS: ds.param "model.layers.0.mlp.shared_expert.gate_proj.weight" sharded @grid {{\[\[}}0]] : tensor<24x64xf32>
// BIAS: ds.param "model.layers.0.mlp.shared_expert.down_proj.weight" sharded @grid {{\[\[}}], [0]] : tensor<64x24xf32>
// BIAS: ds.param "model.layers.0.mlp.shared_expert_gate.weight" : tensor<1x64xf32>
// BIAS: %[[M:.*]] = ds.moe
// BIAS-NEXT: shard.all_reduce %[[M]]

// MLA by heads: q_b_proj and kv_b's head-major rows split, the low-rank
// query, the latent c_kv and the shared k_pe (and their caches) replicated.
// MLA: ds.param "model.layers.3.self_attn.q_a_proj.weight" : tensor<24x64xf32>
// MLA: ds.param "model.layers.3.self_attn.q_b_proj.weight" sharded @grid {{\[\[}}0]] : tensor<48x24xf32>
// MLA: ds.param "model.layers.3.self_attn.kv_a_proj_with_mqa.weight" : tensor<40x64xf32>
// MLA: ds.cache_update {{.*}} : tensor<?x128x32xf32>
// MLA: ds.param "model.layers.3.self_attn.kv_b_proj.weight" sharded @grid {{\[\[}}0]] : tensor<64x32xf32>
// MLA: ds.mla_attention {{.*}} -> tensor<?x?x2x16xf32>
// MLA-COUNT-2: shard.all_reduce
// MLA: return {{.*}} : tensor<?x?x64xf32>, tensor<?x128x32xf32>, tensor<?x128x8xf32>

// A dense SwiGLU MLP is a column -> row pair; the LM head (a projection
// whose result is returned) is vocabulary-split and its logits gathered;
// the embedding is vocabulary-split too (each process looks up its block of
// the vocabulary, zeros elsewhere, and an all-reduce completes the rows);
// norms stay replicated. A weight used twice (tied embeddings) is split for
// each use (the same block here, so one param); with split-embedding=false
// the embedding's use stays whole.
// CHECK: shard.grid @grid(shape = 2)
// CHECK-LABEL: func.func @dense_and_head
// CHECK: %[[E:.*]] = ds.param "embed" sharded @grid {{\[\[}}0]] : tensor<16x16xf32>
// CHECK: %[[X:.*]] = ds.embedding %[[E]]{{.*}} {vocab_grid = @grid, vocab_grid_axes = array<i16: 0>} : tensor<16x16xf32>, tensor<?x?xi64> -> tensor<?x?x16xf32>
// CHECK-NEXT: shard.all_reduce %[[X]] on @grid grid_axes = [0]
// NOSPLIT-LABEL: func.func @dense_and_head
// NOSPLIT-DAG: ds.param "embed" sharded @grid {{\[\[}}0]] : tensor<16x16xf32>
// NOSPLIT-DAG: ds.param "embed" : tensor<32x16xf32>
// NOSPLIT-NOT: vocab_grid
// CHECK: ds.param "gate" sharded @grid {{\[\[}}0]] : tensor<12x16xf32>
// CHECK: ds.param "up" sharded @grid {{\[\[}}0]] : tensor<12x16xf32>
// CHECK: ds.param "down" sharded @grid {{\[\[}}], [0]] : tensor<16x12xf32>
// CHECK: ds.swiglu {{.*}} : tensor<?x?x12xf32>
// CHECK: %[[D:.*]] = ds.linear {{.*}} -> tensor<?x?x16xf32>
// CHECK-NEXT: shard.all_reduce %[[D]]
// CHECK: %[[L:.*]] = ds.linear {{.*}} -> tensor<?x?x16xf32>
// CHECK-NEXT: %[[G:.*]] = shard.all_gather %[[L]] on @grid grid_axes = [0] gather_axis = 2 : tensor<?x?x16xf32> -> tensor<?x?x32xf32>
// CHECK-NEXT: return %[[G]]
// TP1-NOT: shard.
// TP1-NOT: sharded
func.func @dense_and_head(%ids: tensor<?x?xi64>) -> tensor<?x?x32xf32> {
  %e = ds.param "embed" : tensor<32x16xf32>
  %x = ds.embedding %e[%ids] : tensor<32x16xf32>, tensor<?x?xi64> -> tensor<?x?x16xf32>
  %wg = ds.param "gate" : tensor<24x16xf32>
  %wu = ds.param "up" : tensor<24x16xf32>
  %wd = ds.param "down" : tensor<16x24xf32>
  %g = ds.linear %x, %wg : tensor<?x?x16xf32>, tensor<24x16xf32> -> tensor<?x?x24xf32>
  %u = ds.linear %x, %wu : tensor<?x?x16xf32>, tensor<24x16xf32> -> tensor<?x?x24xf32>
  %h = ds.swiglu %g, %u : tensor<?x?x24xf32>
  %d = ds.linear %h, %wd : tensor<?x?x24xf32>, tensor<16x24xf32> -> tensor<?x?x16xf32>
  %r = arith.addf %x, %d : tensor<?x?x16xf32>
  %logits = ds.linear %r, %e : tensor<?x?x16xf32>, tensor<32x16xf32> -> tensor<?x?x32xf32>
  return %logits : tensor<?x?x32xf32>
}

// Expert parallelism on a [ep, tp] grid: blocks of routed experts over ep,
// their intermediate size over tp, the shared expert over both, attention
// tensor-parallel over tp; the MoE block ends with one all-reduce over both.
// EP: shard.grid @grid(shape = 2x2)
// EP: ds.param "model.layers.3.self_attn.q_b_proj.weight" sharded @grid {{\[\[}}1]] : tensor<48x24xf32>
// EP: ds.param "model.layers.3.self_attn.o_proj.weight" sharded @grid {{\[\[}}], [1]]
// EP-NEXT: %[[O:.*]] = ds.linear
// EP-NEXT: shard.all_reduce %[[O]] on @grid grid_axes = [1]
// EP: ds.param "model.layers.3.mlp.experts.*.gate_proj.weight" sharded @grid {{\[\[}}0], [1]] : tensor<4x16x64xf32>
// EP: ds.param "model.layers.3.mlp.experts.*.down_proj.weight" sharded @grid {{\[\[}}0], [], [1]] : tensor<4x64x16xf32>
// EP: ds.param "model.layers.3.mlp.shared_experts.gate_proj.weight" sharded @grid {{\[\[}}0, 1]] : tensor<8x64xf32>
// EP: %[[M:.*]] = ds.moe {{.*}}expert_grid = @grid, expert_grid_axes = array<i16: 0>
// EP-NEXT: shard.all_reduce %[[M]] on @grid grid_axes = [0, 1]
// With ep alone, attention is replicated and only the experts split.
// EP4: shard.grid @grid(shape = 4)
// EP4-NOT: self_attn.{{.*}} sharded
// EP4: ds.param "model.layers.0.block_sparse_moe.experts.*.w1.weight" sharded @grid {{\[\[}}0]] : tensor<2x32x64xf32>
// EP4: ds.moe {{.*}}expert_grid = @grid, expert_grid_axes = array<i16: 0>
// EP4-NEXT: shard.all_reduce {{.*}} grid_axes = [0]
// ds-decompose-moe routes over every expert and turns a block of experts
// into the fused kernel over the block; the all-reduce sums the blocks.
// EPDEC-NOT: ds.moe_dispatch
// EPDEC: ds.router {{.*}}num_experts = 8
// EPDEC-NOT: ds.moe_dispatch
// EPDEC: ds.fused_moe {{.*}} {expert_grid = @grid, expert_grid_axes = array<i16: 0>} : {{.*}}tensor<4x32x64xf32>, tensor<4x64x16xf32>)
// EPDEC-NOT: ds.moe_dispatch
// EPDEC: shard.all_reduce {{.*}} grid_axes = [0, 1]

// dp with moe-all-to-all: the tokens split over the replicas, the routed
// experts too (a block each), the shared expert replicated, and no
// all-reduce after the MoE block (its all-to-alls return whole outputs).
// A2A: shard.grid @grid(shape = 2)
// A2A: ds.param "model.layers.3.mlp.experts.*.gate_proj.weight" sharded @grid {{\[\[}}0]] : tensor<4x32x64xf32>
// A2A: ds.param "model.layers.3.mlp.shared_experts.gate_proj.weight" : tensor<32x64xf32>
// A2A: ds.moe {{.*}}all_to_all, expert_grid = @grid, expert_grid_axes = array<i16: 0>
// A2A-NOT: shard.all_reduce
// A2ADEC: ds.fused_moe {{.*}} {all_to_all, expert_grid = @grid, expert_grid_axes = array<i16: 0>} : {{.*}}tensor<4x64x64xf32>, tensor<4x64x32xf32>)

// Data parallelism on a [dp, tp] grid: arguments and results split along
// the batch over dp (a per-head KV cache by heads over tp too); the
// collectives stay within a replica (tp's axis).
// DP: shard.grid @grid(shape = 2x2)
// DP-LABEL: func.func @mixtral_prefill
// DP-SAME: tensor<?x?x64xf32> {ds.split_axes = #shard<axisarray{{\[\[}}0]]>}
// DP-SAME: -> (tensor<?x?x64xf32> {ds.split_axes = #shard<axisarray{{\[\[}}0]]>})
// DP-NOT: grid_axes = [0]
// DP: shard.all_reduce {{.*}} grid_axes = [1]
// DP-LABEL: func.func @mixtral_attention_decode
// DP-SAME: tensor<?x256x1x16xf32> {ds.split_axes = #shard<axisarray{{\[\[}}0], [], [1]]>}
// DP-NOT: all_gather
// DP: return
