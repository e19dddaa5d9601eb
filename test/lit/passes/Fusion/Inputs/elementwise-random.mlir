// Elementwise chains for ds-fuse-elementwise-numerics.test: every fusible op
// kind, broadcasting, bf16 rounding and every activation, on random inputs.

func.func @gated_residual(%x: tensor<?x16xf32>, %r: tensor<?x16xf32>, %s: tensor<?x16xf32>, %g: tensor<?x1xf32>) -> tensor<?x16xf32> {
  %sg = ds.activation sigmoid %g : tensor<?x1xf32>
  %m = ds.mul %s, %sg : tensor<?x16xf32>, tensor<?x1xf32> -> tensor<?x16xf32>
  %a = arith.addf %r, %m : tensor<?x16xf32>
  %y = arith.addf %x, %a : tensor<?x16xf32>
  return %y : tensor<?x16xf32>
}

func.func @activations(%x: tensor<?x8xf32>, %u: tensor<?x8xf32>) -> (tensor<?x8xf32>, tensor<?x8xf32>) {
  %a = ds.activation gelu %x : tensor<?x8xf32>
  %b = ds.activation gelu_tanh %a : tensor<?x8xf32>
  %c = ds.activation relu %b : tensor<?x8xf32>
  %d = arith.subf %c, %u : tensor<?x8xf32>
  %e = arith.divf %d, %x : tensor<?x8xf32>
  %f = arith.maximumf %e, %u : tensor<?x8xf32>
  %g = arith.negf %f : tensor<?x8xf32>
  %h = ds.swiglu %g, %u : tensor<?x8xf32>
  %i = ds.swiglu %x, %x {activation = #ds.activation<gelu>} : tensor<?x8xf32>
  %j = arith.minimumf %i, %h : tensor<?x8xf32>
  %k = ds.activation silu %j : tensor<?x8xf32>
  return %k, %h : tensor<?x8xf32>, tensor<?x8xf32>
}

func.func @mixed_precision(%x: tensor<?x4x8xf32>, %h: tensor<?x4x8xbf16>) -> tensor<?x4x8xf32> {
  %s = ds.activation silu %h : tensor<?x4x8xbf16>
  %m = ds.mul %s, %h : tensor<?x4x8xbf16>, tensor<?x4x8xbf16> -> tensor<?x4x8xbf16>
  %e = arith.extf %m : tensor<?x4x8xbf16> to tensor<?x4x8xf32>
  %y = arith.addf %x, %e : tensor<?x4x8xf32>
  return %y : tensor<?x4x8xf32>
}
