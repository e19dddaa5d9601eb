//===- GemmAmx.cpp - the AMX tile kernels on the CPU's tiles --------------===//
//
// Compiled with -mamx-tile -mamx-bf16 -mamx-int8 (runtime/CMakeLists.txt)
// and called only when amxMode() is Hardware: the CPU has AMX-TILE, -BF16
// and -INT8, and Linux granted this process the tile state (requestTiles,
// asked once before any thread uses a tile). Each call configures its
// thread's tiles and releases them when it returns.
//
//===----------------------------------------------------------------------===//

#include "AmxTiles.h"
#include "ds/rt/ThreadScratch.h"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ds::rt::kernels::amx::hw {
#if defined(__clang__)
// The tile number is a template argument of the intrinsics: clang takes
// it, GCC's AMX intrinsics paste it into inline assembly and need a
// literal. Other compilers build without the hardware tiles (requestTiles
// answers false, so amxMode() is never Hardware).
namespace {
struct CpuTiles {
  void config(const TileConfig &cfg) { _tile_loadconfig(&cfg); }
  template <int T> void load(const void *p, int64_t stride) {
    _tile_loadd(T, p, stride);
  }
  template <int T> void store(void *p, int64_t stride) {
    _tile_stored(T, p, stride);
  }
  template <int T> void zero() { _tile_zero(T); }
  template <int C, int A, int B> void dpbf16() { _tile_dpbf16ps(C, A, B); }
  template <int C, int A, int B> void dpbusd() { _tile_dpbusd(C, A, B); }
  void release() { _tile_release(); }
};
} // namespace

bool requestTiles() {
  // Linux 5.16+: a process asks for the AMX tile data state
  // (XFEATURE_XTILEDATA, 18) before its first tile instruction.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

void gemmBF16(const uint32_t *xp, int64_t ldq, int64_t m, const PackedWeight &w,
              const float *bias, float *c, int64_t ldc, int64_t panelBegin,
              int64_t panelEnd) {
  amx::gemmBF16OnThread<CpuTiles>(xp, ldq, m, w, bias, c, ldc, panelBegin,
                                  panelEnd);
}

void gemmI8(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
            const PackedWeight &w, const float *bias, float *c, int64_t ldc,
            int64_t panelBegin, int64_t panelEnd) {
  CpuTiles tiles;
  amx::gemmI8(tiles, xq, ldq, xs, m, w, bias, c, ldc, panelBegin, panelEnd);
}

#else
bool requestTiles() { return false; }
void gemmBF16(const uint32_t *, int64_t, int64_t, const PackedWeight &,
              const float *, float *, int64_t, int64_t, int64_t) {
  __builtin_trap();
}
void gemmI8(const uint8_t *, int64_t, const float *, int64_t,
            const PackedWeight &, const float *, float *, int64_t, int64_t,
            int64_t) {
  __builtin_trap();
}
#endif

} // namespace ds::rt::kernels::amx::hw
