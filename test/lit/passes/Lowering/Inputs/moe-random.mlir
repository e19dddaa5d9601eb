// MoE blocks whose weights are arguments, for running before and after
// ds-decompose-moe on random inputs.
func.func @mixtral_like(%x: tensor<?x?x16xf32>, %wr: tensor<8x16xf32>, %g: tensor<8x12x16xf32>,
                        %u: tensor<8x12x16xf32>, %d: tensor<8x16x12xf32>) -> tensor<?x?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 2, norm_topk_prob = true>}
      : (tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<8x12x16xf32>, tensor<8x12x16xf32>, tensor<8x16x12xf32>) -> tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}

func.func @deepseek_like(%x: tensor<?x16xf32>, %wr: tensor<8x16xf32>, %b: tensor<8xf32>, %g: tensor<8x12x16xf32>,
                         %u: tensor<8x12x16xf32>, %d: tensor<8x16x12xf32>, %sg: tensor<20x16xf32>,
                         %su: tensor<20x16xf32>, %sd: tensor<16x20xf32>) -> tensor<?x16xf32> {
  %y = ds.moe %x router %wr bias %b experts(%g, %u, %d) shared(%sg, %su, %sd)
      {routing = #ds.routing<num_experts = 8, top_k = 3, scoring = sigmoid, n_group = 4, topk_group = 2, group_score = top2_sum, norm_topk_prob = true, norm_epsilon = 1.0e-20, routed_scaling_factor = 2.5>}
      : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8xf32>, tensor<8x12x16xf32>, tensor<8x12x16xf32>, tensor<8x16x12xf32>, tensor<20x16xf32>, tensor<20x16xf32>, tensor<16x20xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

func.func @qwen2_like(%x: tensor<?x?x16xf32>, %wr: tensor<8x16xf32>, %g: tensor<8x12x16xf32>,
                      %u: tensor<8x12x16xf32>, %d: tensor<8x16x12xf32>, %sg: tensor<20x16xf32>,
                      %su: tensor<20x16xf32>, %sd: tensor<16x20xf32>, %seg: tensor<1x16xf32>) -> tensor<?x?x16xf32> {
  %y = ds.moe %x router %wr experts(%g, %u, %d) shared(%sg, %su, %sd) shared_expert_gate %seg
      {activation = #ds.activation<gelu_tanh>, routing = #ds.routing<num_experts = 8, top_k = 4>}
      : (tensor<?x?x16xf32>, tensor<8x16xf32>, tensor<8x12x16xf32>, tensor<8x12x16xf32>, tensor<8x16x12xf32>, tensor<20x16xf32>, tensor<20x16xf32>, tensor<16x20xf32>, tensor<1x16xf32>) -> tensor<?x?x16xf32>
  return %y : tensor<?x?x16xf32>
}
