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

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
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

/// Where cpuid reports an extension, and which register state the OS must
/// save for it: the one table behind CpuInfo::isa and checkedIsa().
enum Reg { Leaf1C, Leaf7B, Leaf7C, Leaf7D, Leaf7Sub1A, Ext1C, NumRegs };
enum State { NoState, AvxState, ZmmState, TileState };
struct Extension {
  const char *name; ///< LLVM's spelling
  Reg reg;
  int bit;
  State state;
};
constexpr Extension kExtensions[] = {
    {"sse3", Leaf1C, 0, NoState},
    {"ssse3", Leaf1C, 9, NoState},
    {"sse4.1", Leaf1C, 19, NoState},
    {"sse4.2", Leaf1C, 20, NoState},
    {"movbe", Leaf1C, 22, NoState},
    {"popcnt", Leaf1C, 23, NoState},
    {"avx", Leaf1C, 28, AvxState},
    {"f16c", Leaf1C, 29, AvxState},
    {"fma", Leaf1C, 12, AvxState},
    {"lzcnt", Ext1C, 5, NoState},
    {"bmi", Leaf7B, 3, NoState},
    {"bmi2", Leaf7B, 8, NoState},
    {"avx2", Leaf7B, 5, AvxState},
    {"avx512f", Leaf7B, 16, ZmmState},
    {"avx512dq", Leaf7B, 17, ZmmState},
    {"avx512ifma", Leaf7B, 21, ZmmState},
    {"avx512cd", Leaf7B, 28, ZmmState},
    {"avx512bw", Leaf7B, 30, ZmmState},
    {"avx512vl", Leaf7B, 31, ZmmState},
    {"avx512vbmi", Leaf7C, 1, ZmmState},
    {"avx512vbmi2", Leaf7C, 6, ZmmState},
    {"gfni", Leaf7C, 8, NoState},
    {"vaes", Leaf7C, 9, AvxState},
    {"vpclmulqdq", Leaf7C, 10, AvxState},
    {"avx512vnni", Leaf7C, 11, ZmmState},
    {"avx512bitalg", Leaf7C, 12, ZmmState},
    {"avx512vpopcntdq", Leaf7C, 14, ZmmState},
    {"avx512fp16", Leaf7D, 23, ZmmState},
    {"avx512bf16", Leaf7Sub1A, 5, ZmmState},
    {"avxvnni", Leaf7Sub1A, 4, AvxState},
    {"amx-tile", Leaf7D, 24, TileState},
    {"amx-bf16", Leaf7D, 22, TileState},
    {"amx-int8", Leaf7D, 25, TileState},
};

CpuInfo probe() {
  CpuInfo ci;
  ci.model = brandString();
  unsigned regs[NumRegs] = {}, a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d))
    return ci;
  regs[Leaf1C] = c;
  const uint64_t xcr = (c & bit_OSXSAVE) ? xcr0() : 0;
  const bool states[] = {
      true,
      (xcr & 0x6) == 0x6,         // XMM + YMM
      (xcr & 0xe6) == 0xe6,       // + opmask, ZMM_Hi256, Hi16
      (xcr & 0x60000) == 0x60000, // XTILECFG + XTILEDATA
  };
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    regs[Leaf7B] = b;
    regs[Leaf7C] = c;
    regs[Leaf7D] = d;
    __cpuid_count(7, 1, a, b, c, d);
    regs[Leaf7Sub1A] = a;
  }
  if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000001u &&
      __get_cpuid(0x80000001u, &a, &b, &c, &d))
    regs[Ext1C] = c;
  auto reported = [&](const Extension &e) {
    return ((regs[e.reg] >> e.bit) & 1u) && states[e.state];
  };
  // Every AVX-512 extension needs the foundation too.
  const bool foundation = reported(*std::find_if(
      std::begin(kExtensions), std::end(kExtensions),
      [](const Extension &e) { return std::strcmp(e.name, "avx512f") == 0; }));
  for (const Extension &e : kExtensions)
    if (reported(e) && (e.state != ZmmState || foundation))
      ci.isa.push_back(e.name);
  ci.avx2 = ci.has("avx2");
  ci.fma = ci.has("fma");
  ci.f16c = ci.has("f16c");
  ci.avx512f = ci.has("avx512f");
  ci.avx512dq = ci.has("avx512dq");
  ci.avx512bw = ci.has("avx512bw");
  ci.avx512vl = ci.has("avx512vl");
  ci.avx512vnni = ci.has("avx512vnni");
  ci.avx512bf16 = ci.has("avx512bf16");
  ci.avx512fp16 = ci.has("avx512fp16");
  ci.amxTile = ci.has("amx-tile");
  ci.amxBf16 = ci.has("amx-bf16");
  ci.amxInt8 = ci.has("amx-int8");
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
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const Extension &e : kExtensions)
      out.push_back(e.name);
    return out;
  }();
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
