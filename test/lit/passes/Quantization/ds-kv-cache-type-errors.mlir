// RUN: ds-opt %s -ds-kv-cache-type -split-input-file -verify-diagnostics

// A cache read by an op that takes its activations' type only.
func.func @other_reader(%c: tensor<?x8x4xf32>, %pos: tensor<?x1xi64>, %u: tensor<?x1x4xf32>) -> tensor<?x8x4xf32> {
  %c2 = ds.cache_update %c[%pos], %u : tensor<?x8x4xf32>, tensor<?x1xi64>, tensor<?x1x4xf32>
  // expected-error @+1 {{cannot store this KV cache as 'bf16': it is read by 'ds.activation'}}
  %a = ds.activation silu %c2 : tensor<?x8x4xf32>
  return %a : tensor<?x8x4xf32>
}

// -----

// Attention reading a cache as keys and an in-graph value as values.
func.func @mixed(%q: tensor<?x1x2x4xf32>, %kc: tensor<?x8x1x4xf32>, %v: tensor<?x8x1x4xf32>, %pos: tensor<?x1xi64>, %k: tensor<?x1x1x4xf32>) -> tensor<?x1x2x4xf32> {
  %k2 = ds.cache_update %kc[%pos], %k : tensor<?x8x1x4xf32>, tensor<?x1xi64>, tensor<?x1x1x4xf32>
  // expected-error @+1 {{reads a KV cache beside a value that is not one}}
  %o = ds.attention %q, %k2, %v, %pos {scale = 0.5 : f64} : tensor<?x1x2x4xf32>, tensor<?x8x1x4xf32>, tensor<?x8x1x4xf32>, tensor<?x1xi64> -> tensor<?x1x2x4xf32>
  return %o : tensor<?x1x2x4xf32>
}

// -----

// A cache written into another cache as its update.
func.func @update_of_update(%a: tensor<?x8x4xf32>, %b: tensor<?x16x4xf32>, %p1: tensor<?x1xi64>, %p8: tensor<?x8xi64>, %u: tensor<?x1x4xf32>) -> tensor<?x16x4xf32> {
  %a2 = ds.cache_update %a[%p1], %u : tensor<?x8x4xf32>, tensor<?x1xi64>, tensor<?x1x4xf32>
  // expected-error @+1 {{a KV cache is the update of a ds.cache_update}}
  %b2 = ds.cache_update %b[%p8], %a2 : tensor<?x16x4xf32>, tensor<?x8xi64>, tensor<?x8x4xf32>
  return %b2 : tensor<?x16x4xf32>
}
