//===- KVScale.h - the scale of an FP8 e4m3 KV cache -------------*- C++
//-*-===//
//
// An f8E4M3FN KV cache holds e4m3 values times a scale that is a positive
// power of two, so that scaling is exact. The dialect's verifier,
// ds-kv-cache-type's options and the runtime's plan check ask the same
// question here.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_KVSCALE_H
#define DS_SUPPORT_KVSCALE_H

#include <cmath>

namespace ds {

/// Whether `scale` can scale an e4m3 KV cache: finite, positive and a power
/// of two.
inline bool isPowerOfTwoScale(double scale) {
  int exponent = 0;
  return std::isfinite(scale) && scale > 0 &&
         std::frexp(scale, &exponent) == 0.5;
}

} // namespace ds

#endif // DS_SUPPORT_KVSCALE_H
