//===- Math.h - vectorizable elementary functions for the kernels -*- C++
//-*-===//
//
// expf as straight-line float arithmetic (no calls, no branches), so that
// loops over it vectorize: exp(x) = 2^n * p(r) with n = round(x / ln 2) and
// r = x - n ln 2 (ln 2 in two parts, Cody-Waite), p the degree-6 Taylor
// polynomial of e^r on |r| <= ln(2) / 2. Relative error under 2e-7 (about
// 2 ulp) against std::exp over the clamped range; inputs are clamped to
// [-87.3, 88.3], where e^x is a normal float and 2^n fits the exponent.
// Every multiply-add is an explicit FMA, so that the result does not
// depend on the compiler's contraction and the AVX-512 softmax
// (AttentionAvx512.cpp) computes the same bits 16 at a time.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_MATH_H
#define DS_RT_KERNELS_MATH_H

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ds::rt::kernels {

__attribute__((always_inline)) inline float expApprox(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  // Round to nearest by adding and subtracting 1.5 * 2^23.
  const float shifter = 12582912.0f;
  float n = std::fma(x, 1.44269504088896341f, shifter) - shifter;
  float r = std::fma(-n, 0.693145751953125f, x);
  r = std::fma(-n, 1.42860682030941723e-6f, r);
  float p = 1.0f / 720.0f;
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // NaN stays NaN through p; its exponent is taken as 0 (converting NaN to
  // an integer is undefined).
  int32_t bits = (static_cast<int32_t>(n == n ? n : 0.0f) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

} // namespace ds::rt::kernels

#endif // DS_RT_KERNELS_MATH_H
