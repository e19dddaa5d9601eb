//===- GemmAvx512.cpp - the GEMM microkernel built for AVX-512 ----------===//
//
// Compiled with the ISA's flags (runtime/CMakeLists.txt); Gemm.cpp calls it
// only when the CPU has the features.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadScratch.h"

#include <algorithm>
#include <cstring>
#include <immintrin.h>
#include <type_traits>
#include <vector>

#define DS_VW 16

namespace ds::rt::kernels::avx512 {
#include "GemmKernels.inc"
} // namespace ds::rt::kernels::avx512
