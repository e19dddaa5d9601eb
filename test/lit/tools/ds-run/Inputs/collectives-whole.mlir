// What collectives-partitioned.mlir computes, on whole values.
func.func @f(%x: tensor<4x8xf32>, %y: tensor<8x4xf32>)
    -> (tensor<4x4xf32>, tensor<4x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>) {
  %a, %b = ds.split %x axis 1 sizes [4, 4] : tensor<4x8xf32> -> tensor<4x4xf32>, tensor<4x4xf32>
  %r = arith.addf %a, %b : tensor<4x4xf32>
  return %r, %x, %y, %y : tensor<4x4xf32>, tensor<4x8xf32>, tensor<8x4xf32>, tensor<8x4xf32>
}
