//===- GemmAmxEmulated.cpp - the AMX tile kernels on emulated tiles -------===//
//
// A C++ model of the eight AMX tiles and the instructions the tile kernels
// use (AmxTiles.h), so that those kernels run on any CPU
// (DS_CPU_AMX=emulate): slow, for tests. It follows the Intel SDM's
// Operation sections:
//   - ldtilecfg zeroes every tile; tileloadd / tilestored move `rows` rows
//     of `colsb` bytes; a tile used with a shape the instruction does not
//     accept is a fault (#UD on the CPU): reported and aborted here;
//   - tdpbf16ps: per output row m and column n, two f32 sums start at zero
//     and take, for every pair k of the chunk in order, the product of the
//     even (resp. odd) bf16 elements by an FMA; the two sums are added and
//     the result added to C. Inputs are read with DAZ, results flushed to
//     zero (FTZ), rounding to nearest even;
//   - tdpbusd: per output, the products of unsigned bytes of A and signed
//     bytes of B added to C in 32-bit wrapping arithmetic.
// On a CPU with AMX the unit tests compare the tiles with this model bit
// for bit.
//
//===----------------------------------------------------------------------===//

#include "AmxTiles.h"
#include "ds/rt/ThreadScratch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ds::rt::kernels::amx::emu {
namespace {

float bitsToFloat(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// A denormal f32 read as zero (DAZ) or written as zero (FTZ), sign kept.
float flushDenormal(float x) {
  return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
}

float bf16Value(uint16_t bits) {
  return flushDenormal(bitsToFloat(static_cast<uint32_t>(bits) << 16));
}

class EmulatedTiles {
public:
  void config(const TileConfig &cfg) {
    if (cfg.palette != 1)
      fault("palette other than 1");
    for (int t = 0; t < 8; ++t) {
      if (cfg.rows[t] > 16 || cfg.colsb[t] > 64 ||
          (cfg.rows[t] == 0) != (cfg.colsb[t] == 0))
        fault("tile shape out of range");
      rows[t] = cfg.rows[t];
      colsb[t] = cfg.colsb[t];
    }
    std::memset(data, 0, sizeof(data));
    configured = true;
  }
  template <int T> void load(const void *p, int64_t stride) {
    check(T);
    const auto *src = static_cast<const uint8_t *>(p);
    std::memset(data[T], 0, sizeof(data[T]));
    for (int r = 0; r < rows[T]; ++r)
      std::memcpy(data[T][r], src + r * stride, colsb[T]);
  }
  template <int T> void store(void *p, int64_t stride) {
    check(T);
    auto *dst = static_cast<uint8_t *>(p);
    for (int r = 0; r < rows[T]; ++r)
      std::memcpy(dst + r * stride, data[T][r], colsb[T]);
  }
  template <int T> void zero() {
    check(T);
    std::memset(data[T], 0, sizeof(data[T]));
  }
  template <int C, int A, int B> void dpbf16() {
    shapes(C, A, B);
    for (int m = 0; m < rows[C]; ++m)
      for (int n = 0; n < colsb[C] / 4; ++n) {
        float even = 0.0f, odd = 0.0f;
        for (int k = 0; k < colsb[A] / 4; ++k) {
          const uint16_t *a = half(A, m, 2 * k), *b = half(B, k, 2 * n);
          even =
              flushDenormal(std::fma(bf16Value(a[0]), bf16Value(b[0]), even));
          odd = flushDenormal(std::fma(bf16Value(a[1]), bf16Value(b[1]), odd));
        }
        float acc;
        std::memcpy(&acc, data[C][m] + 4 * n, 4);
        acc = flushDenormal(flushDenormal(acc) + flushDenormal(even + odd));
        std::memcpy(data[C][m] + 4 * n, &acc, 4);
      }
  }
  template <int C, int A, int B> void dpbusd() {
    shapes(C, A, B);
    for (int m = 0; m < rows[C]; ++m)
      for (int n = 0; n < colsb[C] / 4; ++n) {
        uint32_t acc;
        std::memcpy(&acc, data[C][m] + 4 * n, 4);
        for (int k = 0; k < colsb[A] / 4; ++k)
          for (int i = 0; i < 4; ++i) {
            const int32_t a = data[A][m][4 * k + i];
            const int32_t b = static_cast<int8_t>(data[B][k][4 * n + i]);
            acc += static_cast<uint32_t>(a * b);
          }
        std::memcpy(data[C][m] + 4 * n, &acc, 4);
      }
  }
  void release() { configured = false; }

private:
  [[noreturn]] static void fault(const char *what) {
    std::fprintf(stderr, "ds: emulated AMX tile fault: %s\n", what);
    std::abort();
  }
  void check(int t) const {
    if (!configured || rows[t] == 0)
      fault("tile used unconfigured");
  }
  /// The shapes tdpbf16ps / tdpbusd accept: C rows x N, A rows x K, B K x N
  /// (in 4-byte elements).
  void shapes(int c, int a, int b) const {
    check(c);
    check(a);
    check(b);
    if (rows[c] != rows[a] || colsb[b] != colsb[c] || rows[b] != colsb[a] / 4)
      fault("dot product of mismatched tile shapes");
  }
  const uint16_t *half(int t, int row, int element) const {
    return reinterpret_cast<const uint16_t *>(data[t][row]) + element;
  }

  alignas(64) uint8_t data[8][16][64] = {};
  int rows[8] = {}, colsb[8] = {};
  bool configured = false;
};

} // namespace

void gemmBF16(const uint32_t *xp, int64_t ldq, int64_t m, const PackedWeight &w,
              const float *bias, float *c, int64_t ldc, int64_t panelBegin,
              int64_t panelEnd) {
  amx::gemmBF16OnThread<EmulatedTiles>(xp, ldq, m, w, bias, c, ldc, panelBegin,
                                       panelEnd);
}

void gemmI8(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
            const PackedWeight &w, const float *bias, float *c, int64_t ldc,
            int64_t panelBegin, int64_t panelEnd) {
  EmulatedTiles tiles;
  amx::gemmI8(tiles, xq, ldq, xs, m, w, bias, c, ldc, panelBegin, panelEnd);
}

} // namespace ds::rt::kernels::amx::emu
