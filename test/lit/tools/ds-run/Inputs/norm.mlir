func.func @f(%w: tensor<64xf32>, %x: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %0 = ds.rms_norm %x, %w {epsilon = 1.0e-06 : f64} : tensor<?x64xf32>, tensor<64xf32>
  return %0 : tensor<?x64xf32>
}
