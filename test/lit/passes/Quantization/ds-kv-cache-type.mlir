// RUN: ds-opt %s -ds-kv-cache-type -split-input-file | FileCheck %s
// RUN: ds-opt %s -ds-kv-cache-type=type=f16 -split-input-file | FileCheck %s --check-prefix=F16
// RUN: ds-opt %s -ds-kv-cache-type -ds-kv-cache-type=type=f32 -split-input-file | FileCheck %s --check-prefix=WIDE
// RUN: not ds-opt %s -ds-kv-cache-type=type=f8 -split-input-file 2>&1 | FileCheck %s --check-prefix=BADTYPE
// RUN: ds-opt %s -ds-kv-cache-type="type=f8e4m3 scale=0.25" -split-input-file | FileCheck %s --check-prefix=FP8
// RUN: ds-opt %s -ds-kv-cache-type="type=f8e4m3 scale=0.25" -ds-kv-cache-type=type=bf16 -split-input-file | FileCheck %s --check-prefix=BACK
// RUN: echo '{"kv_caches": {"cache0": 20.0, "cache1": 448.0}}' > %t.ranges.json
// RUN: ds-opt %s -ds-kv-cache-type="type=f8e4m3 calibration=%t.ranges.json" -split-input-file | FileCheck %s --check-prefix=CAL
// RUN: echo '{"kv_caches": {"cache0": 1.0}}' > %t.short.json
// RUN: not ds-opt %s -ds-kv-cache-type="type=f8e4m3 calibration=%t.short.json" -split-input-file 2>&1 | FileCheck %s --check-prefix=SHORT
// RUN: not ds-opt %s -ds-kv-cache-type="type=f8e4m3 scale=0.3" 2>&1 | FileCheck %s --check-prefix=BADSCALE
// RUN: not ds-opt %s -ds-kv-cache-type="type=bf16 scale=0.5" 2>&1 | FileCheck %s --check-prefix=NOTFP8

// GQA decode: the cache arguments, their updates and the returned caches
// become bf16; the update's rows and everything else keep their types.
// CHECK-LABEL: func.func @gqa
// CHECK-SAME: %[[KC:[^:]+]]: tensor<?x32x2x16xbf16>, %[[VC:[^:]+]]: tensor<?x32x2x16xbf16>
// CHECK-SAME: -> (tensor<?x1x8x16xf32>, tensor<?x32x2x16xbf16>, tensor<?x32x2x16xbf16>)
// CHECK: %[[K2:.+]] = ds.cache_update %[[KC]][%{{.*}}], %{{.*}} : tensor<?x32x2x16xbf16>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
// CHECK: %[[V2:.+]] = ds.cache_update %[[VC]][%{{.*}}], %{{.*}} : tensor<?x32x2x16xbf16>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
// CHECK: %[[O:.+]] = ds.attention %{{.*}}, %[[K2]], %[[V2]], %{{.*}} {scale = 2.500000e-01 : f64} : tensor<?x1x8x16xf32>, tensor<?x32x2x16xbf16>, tensor<?x32x2x16xbf16>, tensor<?x1xi64> -> tensor<?x1x8x16xf32>
// CHECK: return %[[O]], %[[K2]], %[[V2]] : tensor<?x1x8x16xf32>, tensor<?x32x2x16xbf16>, tensor<?x32x2x16xbf16>
// F16-LABEL: func.func @gqa
// F16-SAME: tensor<?x32x2x16xf16>, %{{[^:]+}}: tensor<?x32x2x16xf16>
// F16: ds.attention {{.*}} : tensor<?x1x8x16xf32>, tensor<?x32x2x16xf16>, tensor<?x32x2x16xf16>
// WIDE-LABEL: func.func @gqa
// WIDE-SAME: tensor<?x32x2x16xf32>, %{{[^:]+}}: tensor<?x32x2x16xf32>
// WIDE-NOT: bf16
// BADTYPE: ds-kv-cache-type: type must be bf16, f16, f8e4m3 or f32, got 'f8'
// FP8-LABEL: func.func @gqa
// FP8-SAME: tensor<?x32x2x16xf8E4M3FN>, %{{[^:]+}}: tensor<?x32x2x16xf8E4M3FN>
// FP8: ds.cache_update {{.*}} {kv_scale = 2.500000e-01 : f64} : tensor<?x32x2x16xf8E4M3FN>
// FP8: ds.cache_update {{.*}} {kv_scale = 2.500000e-01 : f64} : tensor<?x32x2x16xf8E4M3FN>
// FP8: ds.attention {{.*}} {k_scale = 2.500000e-01 : f64, scale = 2.500000e-01 : f64, v_scale = 2.500000e-01 : f64} : tensor<?x1x8x16xf32>, tensor<?x32x2x16xf8E4M3FN>, tensor<?x32x2x16xf8E4M3FN>
// FP8-LABEL: func.func @mla
// FP8: ds.mla_attention {{.*}} {c_kv_scale = 2.500000e-01 : f64, k_pe_scale = 2.500000e-01 : f64, scale = 2.000000e-01 : f64} : {{.*}}, tensor<?x32x32xf8E4M3FN>, tensor<?x32x8xf8E4M3FN>
// Another type drops the scales.
// BACK-LABEL: func.func @gqa
// BACK-NOT: scale = 2.5
// BACK: ds.attention {{.*}} {scale = 2.500000e-01 : f64} : tensor<?x1x8x16xf32>, tensor<?x32x2x16xbf16>
// Calibrated: the smallest power of two that stores the range (20 / 448
// -> 2^-4; 448 -> 1), per cache in argument order.
// CAL-LABEL: func.func @gqa
// CAL: ds.cache_update {{.*}} {kv_scale = 6.250000e-02 : f64}
// CAL: ds.cache_update {{.*}} {kv_scale = 1.000000e+00 : f64}
// CAL: ds.attention {{.*}} {k_scale = 6.250000e-02 : f64, scale = 2.500000e-01 : f64, v_scale = 1.000000e+00 : f64}
// SHORT: error: ds-kv-cache-type: {{.*}}short.json has no range for cache1 (calibrated on another model?)
// BADSCALE: ds-kv-cache-type: scale must be a positive power of two, got 3.000000e-01
// NOTFP8: ds-kv-cache-type: scale and calibration are for type=f8e4m3 only
func.func @gqa(%q: tensor<?x1x8x16xf32>, %k: tensor<?x1x2x16xf32>, %v: tensor<?x1x2x16xf32>, %pos: tensor<?x1xi64>, %kc: tensor<?x32x2x16xf32>, %vc: tensor<?x32x2x16xf32>) -> (tensor<?x1x8x16xf32>, tensor<?x32x2x16xf32>, tensor<?x32x2x16xf32>) {
  %k2 = ds.cache_update %kc[%pos], %k : tensor<?x32x2x16xf32>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
  %v2 = ds.cache_update %vc[%pos], %v : tensor<?x32x2x16xf32>, tensor<?x1xi64>, tensor<?x1x2x16xf32>
  %o = ds.attention %q, %k2, %v2, %pos {scale = 0.25 : f64} : tensor<?x1x8x16xf32>, tensor<?x32x2x16xf32>, tensor<?x32x2x16xf32>, tensor<?x1xi64> -> tensor<?x1x8x16xf32>
  return %o, %k2, %v2 : tensor<?x1x8x16xf32>, tensor<?x32x2x16xf32>, tensor<?x32x2x16xf32>
}

// -----

// MLA: the latent and rope-key caches.
// CHECK-LABEL: func.func @mla
// CHECK-SAME: tensor<?x32x32xbf16>, %{{[^:]+}}: tensor<?x32x8xbf16>
// CHECK: ds.mla_attention {{.*}} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x32x32xbf16>, tensor<?x32x8xbf16>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
// CHECK: return {{.*}} : tensor<?x?x4x16xf32>, tensor<?x32x32xbf16>, tensor<?x32x8xbf16>
func.func @mla(%qn: tensor<?x?x4x16xf32>, %qp: tensor<?x?x4x8xf32>, %c: tensor<?x?x32xf32>, %kp: tensor<?x?x8xf32>, %w: tensor<128x32xf32>, %pos: tensor<?x?xi64>, %cc: tensor<?x32x32xf32>, %kc: tensor<?x32x8xf32>) -> (tensor<?x?x4x16xf32>, tensor<?x32x32xf32>, tensor<?x32x8xf32>) {
  %c2 = ds.cache_update %cc[%pos], %c : tensor<?x32x32xf32>, tensor<?x?xi64>, tensor<?x?x32xf32>
  %k2 = ds.cache_update %kc[%pos], %kp : tensor<?x32x8xf32>, tensor<?x?xi64>, tensor<?x?x8xf32>
  %o = ds.mla_attention %qn, %qp, %c2, %k2, %w, %pos {scale = 0.2 : f64} : tensor<?x?x4x16xf32>, tensor<?x?x4x8xf32>, tensor<?x32x32xf32>, tensor<?x32x8xf32>, tensor<128x32xf32>, tensor<?x?xi64> -> tensor<?x?x4x16xf32>
  return %o, %c2, %k2 : tensor<?x?x4x16xf32>, tensor<?x32x32xf32>, tensor<?x32x8xf32>
}

// -----

// Arguments that are not caches (in-graph keys) keep their type.
// CHECK-LABEL: func.func @no_cache
// CHECK-NOT: bf16
// CHECK: return
func.func @no_cache(%q: tensor<?x?x8x16xf32>, %k: tensor<?x?x2x16xf32>, %v: tensor<?x?x2x16xf32>, %pos: tensor<?x?xi64>) -> tensor<?x?x8x16xf32> {
  %o = ds.attention %q, %k, %v, %pos {scale = 0.25 : f64} : tensor<?x?x8x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?x2x16xf32>, tensor<?x?xi64> -> tensor<?x?x8x16xf32>
  return %o : tensor<?x?x8x16xf32>
}
