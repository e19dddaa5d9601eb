//===- GemmAvx2.cpp - the GEMM microkernel built for AVX2 ------------===//
//
// Compiled with the ISA's flags (runtime/CMakeLists.txt); Gemm.cpp calls it
// only when the CPU has the features.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Kernels.h"

#include <algorithm>
#include <cstring>
#include <immintrin.h>
#include <type_traits>

#define DS_VW 8

namespace ds::rt::kernels::avx2 {
#include "GemmKernels.inc"

void gemmPanels(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
                const float *bias, float *c, int64_t ldc, int64_t panelBegin,
                int64_t panelEnd) {
  switch (w.format) {
  case WeightFormat::F32:
    return gemmDispatch<WeightFormat::F32>(a, m, lda, w, bias, c, ldc,
                                           panelBegin, panelEnd);
  case WeightFormat::I8:
    return gemmDispatch<WeightFormat::I8>(a, m, lda, w, bias, c, ldc,
                                          panelBegin, panelEnd);
  case WeightFormat::I4:
    return gemmDispatch<WeightFormat::I4>(a, m, lda, w, bias, c, ldc,
                                          panelBegin, panelEnd);
  case WeightFormat::F8:
    return gemmDispatch<WeightFormat::F8>(a, m, lda, w, bias, c, ldc,
                                          panelBegin, panelEnd);
  case WeightFormat::S24:
    return gemmS24(a, m, lda, w, bias, c, ldc, panelBegin, panelEnd);
  case WeightFormat::I8Dot:
    break; // gemm() routes W8A8 to GemmInt8.cpp
  }
}

int64_t panelsPerGroup(int64_t m) { return groupPanels(m); }
} // namespace ds::rt::kernels::avx2
