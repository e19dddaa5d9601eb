// RUN: ds-opt %s --load-pass-plugin=%ds_lib_dir/DSExamplePlugin%shlibext \
// RUN:   --pass-pipeline='builtin.module(ds-example-report-moe)' \
// RUN:   -verify-diagnostics -o /dev/null

// The example plugin (examples/plugin) is loaded at run time, registers its
// pass, and reads ds ops through the shared ds dialect library.

func.func @routers(%logits: tensor<?x8xf32>, %x: tensor<?x16xf32>, %wr: tensor<8x16xf32>,
                   %g: tensor<8x4x16xf32>, %u: tensor<8x4x16xf32>, %d: tensor<8x16x4xf32>) -> tensor<?x16xf32> {
  // expected-remark @below {{routes 2 of 8 experts (softmax)}}
  %w, %i = ds.router %logits {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // expected-remark @below {{routes 3 of 8 experts (sigmoid)}}
  %y = ds.moe %x router %wr experts(%g, %u, %d) {routing = #ds.routing<num_experts = 8, top_k = 3, scoring = sigmoid>}
      : (tensor<?x16xf32>, tensor<8x16xf32>, tensor<8x4x16xf32>, tensor<8x4x16xf32>, tensor<8x16x4xf32>) -> tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}
