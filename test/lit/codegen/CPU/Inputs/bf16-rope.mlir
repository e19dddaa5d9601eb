// A bf16 activation into an op the CPU backend computes in f32 only.
func.func @rope_bf16(%q: tensor<?x?x4x16xbf16>, %pos: tensor<?x?xi64>) -> tensor<?x?x4x16xbf16> {
  %0 = ds.rope %q, %pos {rope = #ds.rope<dim = 16, theta = 10000.0>} : tensor<?x?x4x16xbf16>, tensor<?x?xi64>
  return %0 : tensor<?x?x4x16xbf16>
}
