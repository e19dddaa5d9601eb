//===- CpuInfo.cpp - cpuid and cache-size probing
//---------------------------===//
//
// Features come from cpuid (leaf 7 for AVX-512 / AMX, checked against the
// XCR0 state the OS enables), cache sizes from
// /sys/devices/system/cpu/cpu0/cache (the kernel's view, right in VMs that
// pass the host's topology through), else sysconf, else the defaults in
// CpuInfo.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/CpuInfo.h"

#include <cpuid.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace ds::rt {
namespace {

/// XCR0: which register states the OS saves (AVX, AVX-512, AMX tiles).
uint64_t xcr0() {
  uint32_t eax, edx;
  __asm__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

std::string brandString() {
  unsigned regs[12];
  unsigned max = __get_cpuid_max(0x80000000u, nullptr);
  if (max < 0x80000004u)
    return "unknown";
  for (unsigned i = 0; i < 3; ++i)
    __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1],
                &regs[4 * i + 2], &regs[4 * i + 3]);
  std::string s(reinterpret_cast<const char *>(regs), sizeof(regs));
  s = s.c_str();
  size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? "unknown" : s.substr(b, e - b + 1);
}

/// "48K" / "2048K" / "260M" as bytes; 0 when unreadable.
int64_t parseSize(const std::string &text) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (...) {
    return 0;
  }
  char unit = used < text.size() ? text[used] : ' ';
  if (unit == 'K' || unit == 'k')
    v <<= 10;
  else if (unit == 'M' || unit == 'm')
    v <<= 20;
  return v > 0 ? v : 0;
}

std::string readLine(const std::string &path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

void probeCaches(CpuInfo &ci) {
  bool l1 = false, l2 = false, l3 = false;
  for (int i = 0; i < 8; ++i) {
    std::string dir =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::string level = readLine(dir + "level");
    if (level.empty())
      break;
    std::string type = readLine(dir + "type");
    int64_t size = parseSize(readLine(dir + "size"));
    if (size == 0 || type == "Instruction")
      continue;
    if (level == "1" && type == "Data")
      ci.l1d = size, l1 = true;
    else if (level == "2")
      ci.l2 = size, l2 = true;
    else if (level == "3")
      ci.l3 = size, l3 = true;
  }
#ifdef _SC_LEVEL1_DCACHE_SIZE
  if (long v = sysconf(_SC_LEVEL1_DCACHE_SIZE); !l1 && v > 0)
    ci.l1d = v;
  if (long v = sysconf(_SC_LEVEL2_CACHE_SIZE); !l2 && v > 0)
    ci.l2 = v;
  if (long v = sysconf(_SC_LEVEL3_CACHE_SIZE); !l3 && v > 0)
    ci.l3 = v;
#endif
}

CpuInfo probe() {
  CpuInfo ci;
  ci.model = brandString();
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d))
    return ci;
  const bool osxsave = c & bit_OSXSAVE;
  const uint64_t xcr = osxsave ? xcr0() : 0;
  const bool avxState = (xcr & 0x6) == 0x6;   // XMM + YMM
  const bool zmmState = (xcr & 0xe6) == 0xe6; // + opmask, ZMM_Hi256, Hi16
  const bool tileState = (xcr & 0x60000) == 0x60000; // XTILECFG + XTILEDATA
  ci.fma = avxState && (c & bit_FMA);
  ci.f16c = avxState && (c & bit_F16C);
  if (__get_cpuid_max(0, nullptr) < 7)
    return ci;
  __cpuid_count(7, 0, a, b, c, d);
  ci.avx2 = avxState && (b & bit_AVX2);
  ci.avx512f = zmmState && (b & bit_AVX512F);
  ci.avx512dq = ci.avx512f && (b & bit_AVX512DQ);
  ci.avx512bw = ci.avx512f && (b & bit_AVX512BW);
  ci.avx512vl = ci.avx512f && (b & bit_AVX512VL);
  ci.avx512vnni = ci.avx512f && (c & bit_AVX512VNNI);
  ci.avx512fp16 = ci.avx512f && (d & (1u << 23));
  ci.amxBf16 = tileState && (d & (1u << 22));
  ci.amxTile = tileState && (d & (1u << 24));
  ci.amxInt8 = tileState && (d & (1u << 25));
  unsigned a1, b1, c1, d1;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  ci.avx512bf16 = ci.avx512f && (a1 & (1u << 5));

  // The extensions an artifact may require, by LLVM name.
  unsigned a0, b0, c0, d0, ca, cb, cc, cd;
  __get_cpuid(1, &a0, &b0, &c0, &d0);
  __cpuid_count(7, 0, ca, cb, cc, cd);
  unsigned ext = 0, unused;
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000001u)
    __get_cpuid(0x80000001u, &unused, &unused, &ext, &unused);
  auto bit = [](unsigned reg, int i) { return (reg >> i) & 1u; };
  const bool z = ci.avx512f;
  const std::pair<const char *, bool> table[] = {
      {"sse3", bit(c0, 0)},
      {"ssse3", bit(c0, 9)},
      {"sse4.1", bit(c0, 19)},
      {"sse4.2", bit(c0, 20)},
      {"movbe", bit(c0, 22)},
      {"popcnt", bit(c0, 23)},
      {"avx", avxState && bit(c0, 28)},
      {"f16c", ci.f16c},
      {"fma", ci.fma},
      {"lzcnt", bit(ext, 5)},
      {"bmi", bit(cb, 3)},
      {"bmi2", bit(cb, 8)},
      {"avx2", ci.avx2},
      {"avx512f", ci.avx512f},
      {"avx512dq", ci.avx512dq},
      {"avx512ifma", z && bit(cb, 21)},
      {"avx512cd", z && bit(cb, 28)},
      {"avx512bw", ci.avx512bw},
      {"avx512vl", ci.avx512vl},
      {"avx512vbmi", z && bit(cc, 1)},
      {"avx512vbmi2", z && bit(cc, 6)},
      {"gfni", bit(cc, 8)},
      {"vaes", avxState && bit(cc, 9)},
      {"vpclmulqdq", avxState && bit(cc, 10)},
      {"avx512vnni", ci.avx512vnni},
      {"avx512bitalg", z && bit(cc, 12)},
      {"avx512vpopcntdq", z && bit(cc, 14)},
      {"avx512fp16", ci.avx512fp16},
      {"avx512bf16", ci.avx512bf16},
      {"avxvnni", avxState && bit(a1, 4)},
      {"amx-tile", ci.amxTile},
      {"amx-bf16", ci.amxBf16},
      {"amx-int8", ci.amxInt8},
  };
  for (const auto &[name, present] : table)
    if (present)
      ci.isa.push_back(name);
  probeCaches(ci);
  return ci;
}

} // namespace

std::string CpuInfo::isaSummary() const {
  std::string s;
  if (avx512f) {
    s = "AVX-512 F";
    if (avx512bw)
      s += "/BW";
    if (avx512vl)
      s += "/VL";
    if (avx512dq)
      s += "/DQ";
    if (avx512vnni)
      s += ", VNNI";
    if (avx512bf16)
      s += ", BF16";
    if (avx512fp16)
      s += ", FP16";
  } else if (avx2) {
    s = fma ? "AVX2 + FMA" : "AVX2";
  } else {
    s = "no AVX2";
  }
  if (amxTile)
    s += std::string(", AMX") + (amxBf16 ? " BF16" : "") +
         (amxInt8 ? " INT8" : "");
  return s;
}

bool CpuInfo::has(const std::string &extension) const {
  for (const std::string &e : isa)
    if (e == extension)
      return true;
  return false;
}

const std::vector<std::string> &checkedIsa() {
  static const std::vector<std::string> names = {
      "sse3",       "ssse3",        "sse4.1",
      "sse4.2",     "movbe",        "popcnt",
      "avx",        "f16c",         "fma",
      "lzcnt",      "bmi",          "bmi2",
      "avx2",       "avx512f",      "avx512dq",
      "avx512ifma", "avx512cd",     "avx512bw",
      "avx512vl",   "avx512vbmi",   "avx512vbmi2",
      "gfni",       "vaes",         "vpclmulqdq",
      "avx512vnni", "avx512bitalg", "avx512vpopcntdq",
      "avx512fp16", "avx512bf16",   "avxvnni",
      "amx-tile",   "amx-bf16",     "amx-int8"};
  return names;
}

const CpuInfo &cpuInfo() {
  static const CpuInfo info = probe();
  return info;
}

bool avx2Forced() {
  static const bool forced = [] {
    const char *v = std::getenv("DS_CPU_AVX2");
    return v && *v && std::string(v) != "0";
  }();
  return forced;
}

} // namespace ds::rt
