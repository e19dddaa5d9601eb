// Shard collectives on a 2x2 grid, as a partitioned program: the
// interpreter runs its four processes with emulated collectives.
shard.grid @grid(shape = 2x2)
func.func @f(%x: tensor<4x8xf32>, %y: tensor<2x4xf32> {ds.split_axes = #shard<axisarray[[0, 1]]>})
    -> (tensor<4x4xf32>, tensor<4x8xf32>, tensor<8x4xf32>, tensor<2x4xf32> {ds.split_axes = #shard<axisarray[[0, 1]]>}) {
  // Halves of the columns along axis 1, summed across it.
  %s = shard.all_slice %x on @grid grid_axes = [1] slice_axis = 1 : tensor<4x8xf32> -> tensor<4x4xf32>
  %r = shard.all_reduce %s on @grid grid_axes = [1] : tensor<4x4xf32> -> tensor<4x4xf32>
  // Quarters over both axes, gathered back whole.
  %q = shard.all_slice %x on @grid grid_axes = [0, 1] slice_axis = 1 : tensor<4x8xf32> -> tensor<4x2xf32>
  %g = shard.all_gather %q on @grid grid_axes = [0, 1] gather_axis = 1 : tensor<4x2xf32> -> tensor<4x8xf32>
  // Each process's block of %y, gathered whole; and returned as blocks.
  %w = shard.all_gather %y on @grid grid_axes = [0, 1] gather_axis = 0 : tensor<2x4xf32> -> tensor<8x4xf32>
  return %r, %g, %w, %y : tensor<4x4xf32>, tensor<4x8xf32>, tensor<8x4xf32>, tensor<2x4xf32>
}

// A result that differs between processes cannot be returned replicated.
func.func @g(%x: tensor<4x8xf32>) -> tensor<4x4xf32> {
  %s = shard.all_slice %x on @grid grid_axes = [1] slice_axis = 1 : tensor<4x8xf32> -> tensor<4x4xf32>
  return %s : tensor<4x4xf32>
}
