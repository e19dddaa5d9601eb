// RUN: ds-opt %s -ds-test-infer-types -verify-diagnostics -o /dev/null

// What each op infers from its operands, with dynamic and static dims. A
// written result type may be more static than the inferred one.

func.func @inference(%x: tensor<?x?x64xf32>, %x2: tensor<2x?x64xf32>, %w: tensor<32x64xf32>,
                     %ids: tensor<3x?xi64>, %table: tensor<100x64xbf16>, %pos: tensor<?x?xi64>,
                     %logits: tensor<?x8xf32>, %flat: tensor<6x64xf32>, %idx: tensor<6x2xi32>,
                     %wg: tensor<8x16x64xf32>, %q: tensor<?x?x4x16xf32>, %k: tensor<?x?x2x16xf32>,
                     %v: tensor<?x?x2x8xf32>) {
  // expected-remark @below {{inferred: tensor<?x?x32xf32>}}
  %0 = ds.linear %x, %w : tensor<?x?x64xf32>, tensor<32x64xf32> -> tensor<?x?x32xf32>
  // expected-remark @below {{inferred: tensor<2x?x32xf32>}}
  %1 = ds.linear %x2, %w : tensor<2x?x64xf32>, tensor<32x64xf32> -> tensor<2x5x32xf32>
  // expected-remark @below {{inferred: tensor<3x?x64xbf16>}}
  %2 = ds.embedding %table[%ids] : tensor<100x64xbf16>, tensor<3x?xi64> -> tensor<3x?x64xbf16>
  // expected-remark @below {{inferred: tensor<?x?x4x16xf32>}}
  %3 = ds.split_heads %x into 4 : tensor<?x?x64xf32> -> tensor<?x?x4x16xf32>
  // expected-remark @below {{inferred: tensor<?x?x64xf32>}}
  %4 = ds.merge_heads %3 : tensor<?x?x4x16xf32> -> tensor<?x?x64xf32>
  // expected-remark @below {{inferred: tensor<?x2xf32>, tensor<?x2xi32>}}
  %5:2 = ds.router %logits {routing = #ds.routing<num_experts = 8, top_k = 2>} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
  // Static tokens give a static N * k row count.
  // expected-remark @below {{inferred: tensor<12x64xf32>, tensor<9xi64>, tensor<12xi64>}}
  %6:3 = ds.moe_dispatch %flat, %idx experts 8 : tensor<6x64xf32>, tensor<6x2xi32> -> tensor<12x64xf32>, tensor<9xi64>, tensor<12xi64>
  // expected-remark @below {{inferred: tensor<12x16xf32>}}
  %7 = ds.grouped_matmul %6#0, %wg, %6#1 : tensor<12x64xf32>, tensor<8x16x64xf32>, tensor<9xi64> -> tensor<12x16xf32>
  // GQA: four query heads over two KV heads; the value head dim sets the output.
  // expected-remark @below {{inferred: tensor<?x?x4x8xf32>}}
  %8 = ds.attention %q, %k, %v, %pos {scale = 0.25 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x8xf32>, tensor<?x?xi64> -> tensor<?x?x4x8xf32>
  // expected-remark @below {{inferred: tensor<?x?x48xf32>, tensor<?x?x16xf32>}}
  %9:2 = ds.split %x axis 2 sizes [48, 16] : tensor<?x?x64xf32> -> tensor<?x?x48xf32>, tensor<?x?x16xf32>
  return
}
