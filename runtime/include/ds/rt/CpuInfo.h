//===- CpuInfo.h - what the CPU the runtime runs on offers ------*- C++ -*-===//
//
// The instruction-set extensions and cache sizes of the host, read once per
// process (cpuid for features and the brand string, sysfs for caches, with
// sysconf and conservative defaults behind it). The GEMM and attention
// kernels size their blocks from these instead of constants tuned on one
// machine, and ds-bench prints them beside every figure.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_CPUINFO_H
#define DS_RT_CPUINFO_H

#include <cstdint>
#include <string>
#include <vector>

namespace ds::rt {

struct CpuInfo {
  /// The cpuid brand string ("Intel(R) Xeon(R) ..."), or "unknown".
  std::string model;
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false, avx512fp16 = false;
  bool amxTile = false, amxBf16 = false, amxInt8 = false;
  /// Data cache sizes in bytes: L1d and L2 of one core, L3 as shared.
  int64_t l1d = 32 << 10, l2 = 1 << 20, l3 = 8 << 20;

  /// Every extension of checkedIsa() this CPU has (and the OS enables), in
  /// LLVM's spelling ("avx2", "avx512vnni", "amx-tile", ...).
  std::vector<std::string> isa;

  /// "AVX-512 F/BW/VL/DQ, VNNI, BF16, FP16" style summary of what ds uses.
  std::string isaSummary() const;
  bool has(const std::string &extension) const;
};

/// The x86 extensions ds can check (LLVM's names): what an artifact may
/// require. The compiler generates code with no vector extension outside
/// this list.
const std::vector<std::string> &checkedIsa();

/// The host's CPU, probed on first use (thread-safe).
const CpuInfo &cpuInfo();

/// Whether DS_CPU_AVX2 is set (and not "0"): the kernels and ds-compile then
/// treat the host as an AVX2 machine, so that an AVX-512 host runs and
/// tests the AVX2 paths. cpuInfo() still reports the real CPU.
bool avx2Forced();

} // namespace ds::rt

#endif // DS_RT_CPUINFO_H
