//===- CpuInfoTest.cpp - the host's features and cache sizes --------------===//

#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"

#include <gtest/gtest.h>

namespace {

using ds::rt::cpuInfo;

TEST(CpuInfo, CachesArePlausible) {
  const ds::rt::CpuInfo &ci = cpuInfo();
  EXPECT_FALSE(ci.model.empty());
  // Every x86 core shipped this century: L1d 16 KiB..1 MiB, L2 at least as
  // large, L3 (shared) at least 0 and not below L2 when present.
  EXPECT_GE(ci.l1d, 16 << 10);
  EXPECT_LE(ci.l1d, 1 << 20);
  EXPECT_GE(ci.l2, ci.l1d);
  EXPECT_GE(ci.l3, 0);
}

TEST(CpuInfo, FeaturesAreConsistent) {
  const ds::rt::CpuInfo &ci = cpuInfo();
  // The kernels' dispatch agrees with the probe (unless DS_CPU_AVX2 forces
  // the AVX2 kernels).
  if (ds::rt::kernels::hasAvx512()) {
    EXPECT_TRUE(ci.avx512f && ci.avx512bw && ci.avx512vl);
  }
  if (ci.avx512f) {
    EXPECT_TRUE(ci.avx2 && ci.fma);
    EXPECT_EQ(ci.isaSummary().rfind("AVX-512 F", 0), 0u) << ci.isaSummary();
  } else if (ci.avx2) {
    EXPECT_EQ(ci.isaSummary().rfind("AVX2", 0), 0u) << ci.isaSummary();
  }
  // Extensions imply their base.
  if (ci.avx512vnni || ci.avx512bf16 || ci.avx512fp16)
    EXPECT_TRUE(ci.avx512f);
  if (ci.amxBf16 || ci.amxInt8)
    EXPECT_TRUE(ci.amxTile);
  // Read once: the same object every time.
  EXPECT_EQ(&cpuInfo(), &ci);
}

} // namespace
