//===- AmxTiles.h - GEMMs on AMX tiles, for any tile backend ----*- C++ -*-===//
//
// The bf16 x bf16 GEMM (tdpbf16ps) and the W8A8 GEMM (tdpbusd) on AMX
// tiles, written once against a tile backend T: GemmAmx.cpp instantiates
// them on the CPU's tiles, GemmAmxEmulated.cpp on a C++ model of the tiles
// that follows the instructions' documented arithmetic, so that the
// blocking, the padding and the epilogues run and are tested on CPUs
// without AMX (DS_CPU_AMX=emulate, setAmxMode).
//
// A backend provides config(const TileConfig &), load<t>(ptr, stride),
// store<t>(ptr, stride) (strides in bytes), zero<t>(), dpbf16<c, a, b>(),
// dpbusd<c, a, b>() and release().
//
// A block is up to 32 rows x 2 panels (32 columns): C in tiles 0-3 (rows
// 0-15 x panel 0, rows 0-15 x panel 1, rows 16-31 x panel 0, rows 16-31 x
// panel 1), the rows of A in tiles 4 and 5, the panels of B in 6 and 7.
// K goes in chunks of 64 bytes of an A row (16 bf16 pairs or 16 int8
// quads): B's 16 rows of a chunk are 16 (k, k + 1) pairs or (k .. k + 3)
// quads of the panel's 16 columns, 64 bytes each. A row's arithmetic is
// the same in every block shape, so a row's results do not depend on the
// row count or the split of the panels over threads.
//
// bf16: the panels ([k][16] bf16) are interleaved into pairs per call, for
// the whole K of two panels, into the thread's scratch (then every row
// block reads them from cache); the activations come as pairs (one 32-bit
// word per (k, k + 1)) zero-padded to whole chunks. W8A8: the packed
// panels are already in B's layout ([quad][16][4] int8) and are read in
// place; a panel's last, partial chunk is copied zero-padded to the stack.
// The epilogue is the VNNI kernel's, so W8A8 gives the same bits on AMX,
// VNNI and AVX2.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_AMXTILES_H
#define DS_RT_KERNELS_AMXTILES_H

#include "I8DotLayout.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadScratch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ds::rt::kernels::amx {
// Everything up to the entry points is in an unnamed namespace: each file
// that includes it compiles its own copy with its own ISA flags (one
// shared inline copy would be the AVX-512 one, wherever the linker took
// it from).
namespace {

/// The 64-byte operand of ldtilecfg (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1, startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

/// Pairs (bf16) or quads (int8) per K chunk: one 64-byte A row.
inline constexpr int64_t kChunk = 16;

/// The configuration of a block of rows0 (1..16) + rows1 (0..16) rows.
inline TileConfig blockConfig(int rows0, int rows1) {
  TileConfig cfg;
  auto set = [&](int t, int rows) {
    cfg.rows[t] = static_cast<uint8_t>(rows);
    cfg.colsb[t] = rows ? 64 : 0;
  };
  set(0, rows0);
  set(1, rows0);
  set(2, rows1);
  set(3, rows1);
  set(4, rows0);
  set(5, rows1);
  set(6, 16);
  set(7, 16);
  return cfg;
}

/// Loads a block's configuration when its shape changes.
template <class T> class Configurer {
public:
  explicit Configurer(T &t) : t(t) {}
  void set(int rows0, int rows1) {
    if (rows0 == have0 && rows1 == have1)
      return;
    const TileConfig cfg = blockConfig(rows0, rows1);
    t.config(cfg);
    have0 = rows0;
    have1 = rows1;
  }

private:
  T &t;
  int have0 = -1, have1 = -1;
};

/// bf16 pairs of K, padded to whole chunks.
inline int64_t paddedPairs(int64_t k) {
  return ((k + 1) / 2 + kChunk - 1) / kChunk * kChunk;
}

/// The scratch gemmBF16 takes on each thread: two panels' pairs.
inline uint64_t bf16ScratchBytes(int64_t k) {
  return scratchRound(4 * static_cast<uint64_t>(2 * paddedPairs(k) * kPanel));
}

/// Panel rows ([k][16] bf16) into B's pairs: word 16 j + i holds column i
/// at k = 2 j (low half) and 2 j + 1 (high half); zero past k.
inline void interleavePanel(const uint16_t *panel, int64_t k, int64_t kp,
                            uint32_t *out) {
  const int64_t full = k / 2;
  for (int64_t j = 0; j < full; ++j)
    for (int i = 0; i < kPanel; ++i)
      out[j * kPanel + i] =
          static_cast<uint32_t>(panel[2 * j * kPanel + i]) |
          static_cast<uint32_t>(panel[(2 * j + 1) * kPanel + i]) << 16;
  for (int64_t j = full; j < kp; ++j)
    for (int i = 0; i < kPanel; ++i)
      out[j * kPanel + i] =
          2 * j < k ? static_cast<uint32_t>(panel[2 * j * kPanel + i]) : 0u;
}

/// Stores C tile `Tile` (rows x 16 f32 / int32) at dst (row stride ld
/// elements): in place when the panel is whole, else through `tmp`
/// ([16][16]) and its first `cols` columns.
template <int Tile, class T, class E>
inline void storeTile(T &t, int rows, int cols, E *dst, int64_t ld, E *tmp) {
  if (cols <= 0 || rows <= 0)
    return;
  if (cols >= kPanel) {
    t.template store<Tile>(dst, ld * static_cast<int64_t>(sizeof(E)));
    return;
  }
  t.template store<Tile>(tmp, kPanel * static_cast<int64_t>(sizeof(E)));
  for (int r = 0; r < rows; ++r)
    std::memcpy(dst + r * ld, tmp + r * kPanel, sizeof(E) * cols);
}

/// Zeroes a block's C tiles (0-1 for its first 16 rows and np panels, 2-3
/// for the rest: they exist with rows1 only).
template <class T> inline void zeroC(T &t, int np, int rows1) {
  t.template zero<0>();
  if (np == 2)
    t.template zero<1>();
  if (rows1) {
    t.template zero<2>();
    if (np == 2)
      t.template zero<3>();
  }
}

/// c = bias + a · Wᵀ over panels [panelBegin, panelEnd) of a BF16 weight;
/// xp: the rows of a as bf16 pairs, row stride ldq words, zero from
/// (k + 1) / 2 to paddedPairs(k); bbuf: bf16ScratchBytes(k).
template <class T>
void gemmBF16(T &t, const uint32_t *xp, int64_t ldq, int64_t m,
              const PackedWeight &w, const float *bias, float *c, int64_t ldc,
              int64_t panelBegin, int64_t panelEnd, uint32_t *bbuf) {
  const int64_t kp = paddedPairs(w.k), chunks = kp / kChunk;
  const auto *base = static_cast<const uint16_t *>(w.data);
  const int64_t panelStride = w.k * kPanel, strideA = ldq * 4;
  alignas(64) float biasRows[2][kPanel][kPanel];
  alignas(64) float tmp[kPanel * kPanel];
  Configurer<T> cfg(t);
  for (int64_t p0 = panelBegin; p0 < panelEnd; p0 += 2) {
    const int np = static_cast<int>(std::min<int64_t>(2, panelEnd - p0));
    int cols[2] = {0, 0};
    for (int p = 0; p < np; ++p) {
      interleavePanel(base + (p0 + p) * panelStride, w.k, kp,
                      bbuf + p * kp * kPanel);
      cols[p] = static_cast<int>(
          std::clamp<int64_t>(w.n - (p0 + p) * kPanel, 0, kPanel));
      if (bias)
        for (int r = 0; r < kPanel; ++r)
          for (int j = 0; j < kPanel; ++j)
            biasRows[p][r][j] = j < cols[p] ? bias[(p0 + p) * kPanel + j] : 0;
    }
    const uint32_t *b0 = bbuf, *b1 = bbuf + kp * kPanel;
    for (int64_t r0 = 0; r0 < m; r0 += 2 * kPanel) {
      const int rows = static_cast<int>(std::min<int64_t>(2 * kPanel, m - r0));
      const int rows0 = std::min(rows, static_cast<int>(kPanel));
      const int rows1 = rows - rows0;
      cfg.set(rows0, rows1);
      // C starts from the bias (tiles 2 and 3 exist with rows1 only).
      if (bias) {
        t.template load<0>(biasRows[0], 64);
        if (np == 2)
          t.template load<1>(biasRows[1], 64);
        if (rows1) {
          t.template load<2>(biasRows[0], 64);
          if (np == 2)
            t.template load<3>(biasRows[1], 64);
        }
      } else {
        zeroC(t, np, rows1);
      }
      const uint32_t *a0 = xp + r0 * ldq, *a1 = a0 + kPanel * ldq;
      for (int64_t q = 0; q < chunks; ++q) {
        t.template load<4>(a0 + q * kChunk, strideA);
        t.template load<6>(b0 + q * kChunk * kPanel, 64);
        if (np == 2)
          t.template load<7>(b1 + q * kChunk * kPanel, 64);
        t.template dpbf16<0, 4, 6>();
        if (np == 2)
          t.template dpbf16<1, 4, 7>();
        if (rows1) {
          t.template load<5>(a1 + q * kChunk, strideA);
          t.template dpbf16<2, 5, 6>();
          if (np == 2)
            t.template dpbf16<3, 5, 7>();
        }
      }
      float *out = c + r0 * ldc + p0 * kPanel;
      storeTile<0>(t, rows0, cols[0], out, ldc, tmp);
      storeTile<1>(t, rows0, cols[1], out + kPanel, ldc, tmp);
      storeTile<2>(t, rows1, cols[0], out + kPanel * ldc, ldc, tmp);
      storeTile<3>(t, rows1, cols[1], out + kPanel * ldc + kPanel, ldc, tmp);
    }
  }
  t.release();
}

/// The W8A8 epilogue of `rows` rows x `cols` columns of integer sums
/// (row stride kPanel), as the VNNI kernel computes it: the + 128 of the
/// activations taken back with the column sums, converted, times the
/// column scale times the row scale, plus the bias, one FMA.
inline void epilogueI8(const int32_t *sums, int rows, int cols, const float *xs,
                       const float *scales, const int32_t *colSums,
                       const float *bias, float *c, int64_t ldc) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < cols; ++j) {
      const uint32_t shifted = static_cast<uint32_t>(colSums[j]) << 7;
      const float v = static_cast<float>(static_cast<int32_t>(
          static_cast<uint32_t>(sums[r * kPanel + j]) - shifted));
      c[r * ldc + j] = std::fma(v, scales[j] * xs[r], bias ? bias[j] : 0.0f);
    }
}

/// The minimum row stride of gemmI8's quantized rows: K's quads padded to
/// whole chunks.
inline int64_t i8RowBytes(int64_t k) {
  return ((k + 3) / 4 + kChunk - 1) / kChunk * kChunk * 4;
}

/// c = a · Wᵀ (+ bias) over panels [panelBegin, panelEnd) of an I8Dot
/// weight; xq: the quantized rows (+ 128), row stride ldq >= i8RowBytes(k);
/// xs: their scales.
template <class T>
void gemmI8(T &t, const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
            const PackedWeight &w, const float *bias, float *c, int64_t ldc,
            int64_t panelBegin, int64_t panelEnd) {
  const I8DotLayout l(w);
  const int64_t full = l.quads / kChunk, tailQuads = l.quads % kChunk;
  const int64_t chunks = full + (tailQuads ? 1 : 0);
  constexpr int64_t chunkBytes = kChunk * 64;
  alignas(64) int8_t tail[2][chunkBytes];
  alignas(64) int32_t sums[4][kPanel * kPanel];
  Configurer<T> cfg(t);
  for (int64_t p0 = panelBegin; p0 < panelEnd; p0 += 2) {
    const int np = static_cast<int>(std::min<int64_t>(2, panelEnd - p0));
    const int8_t *panel[2] = {l.base + p0 * l.panelBytes,
                              l.base + (p0 + 1) * l.panelBytes};
    int cols[2] = {0, 0};
    for (int p = 0; p < np; ++p) {
      cols[p] = static_cast<int>(
          std::clamp<int64_t>(w.n - (p0 + p) * kPanel, 0, kPanel));
      if (tailQuads) {
        std::memset(tail[p], 0, chunkBytes);
        std::memcpy(tail[p], panel[p] + full * chunkBytes, tailQuads * 64);
      }
    }
    auto chunkOf = [&](int p, int64_t q) -> const int8_t * {
      return q < full ? panel[p] + q * chunkBytes : tail[p];
    };
    for (int64_t r0 = 0; r0 < m; r0 += 2 * kPanel) {
      const int rows = static_cast<int>(std::min<int64_t>(2 * kPanel, m - r0));
      const int rows0 = std::min(rows, static_cast<int>(kPanel));
      const int rows1 = rows - rows0;
      cfg.set(rows0, rows1);
      zeroC(t, np, rows1);
      const uint8_t *a0 = xq + r0 * ldq, *a1 = a0 + kPanel * ldq;
      for (int64_t q = 0; q < chunks; ++q) {
        t.template load<4>(a0 + q * 64, ldq);
        t.template load<6>(chunkOf(0, q), 64);
        if (np == 2)
          t.template load<7>(chunkOf(1, q), 64);
        t.template dpbusd<0, 4, 6>();
        if (np == 2)
          t.template dpbusd<1, 4, 7>();
        if (rows1) {
          t.template load<5>(a1 + q * 64, ldq);
          t.template dpbusd<2, 5, 6>();
          if (np == 2)
            t.template dpbusd<3, 5, 7>();
        }
      }
      t.template store<0>(sums[0], 64);
      if (np == 2)
        t.template store<1>(sums[1], 64);
      if (rows1) {
        t.template store<2>(sums[2], 64);
        if (np == 2)
          t.template store<3>(sums[3], 64);
      }
      for (int p = 0; p < np; ++p) {
        const int64_t col = (p0 + p) * kPanel;
        const float *b = bias ? bias + col : nullptr;
        epilogueI8(sums[p], rows0, cols[p], xs + r0, l.scales + col,
                   l.sums + col, b, c + r0 * ldc + col, ldc);
        epilogueI8(sums[2 + p], rows1, cols[p], xs + r0 + kPanel,
                   l.scales + col, l.sums + col, b,
                   c + (r0 + kPanel) * ldc + col, ldc);
      }
    }
  }
  t.release();
}

/// gemmBF16 on a backend T with its pairs in the thread's scratch: the
/// entry points of both backends.
template <class T>
void gemmBF16OnThread(const uint32_t *xp, int64_t ldq, int64_t m,
                      const PackedWeight &w, const float *bias, float *c,
                      int64_t ldc, int64_t panelBegin, int64_t panelEnd) {
  ThreadScratch::Scope scope;
  auto *bbuf = static_cast<uint32_t *>(scope.bytes(bf16ScratchBytes(w.k)));
  T tiles;
  gemmBF16(tiles, xp, ldq, m, w, bias, c, ldc, panelBegin, panelEnd, bbuf);
}

} // namespace

/// The kernels on the CPU's tiles (GemmAmx.cpp) and on the emulated ones
/// (GemmAmxEmulated.cpp); each bf16 call takes bf16ScratchBytes(k) of its
/// thread's scratch.
namespace hw {
/// Asks Linux for the tile state (arch_prctl ARCH_REQ_XCOMP_PERM); true
/// when granted.
bool requestTiles();
void gemmBF16(const uint32_t *xp, int64_t ldq, int64_t m, const PackedWeight &w,
              const float *bias, float *c, int64_t ldc, int64_t panelBegin,
              int64_t panelEnd);
void gemmI8(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
            const PackedWeight &w, const float *bias, float *c, int64_t ldc,
            int64_t panelBegin, int64_t panelEnd);
} // namespace hw
namespace emu {
void gemmBF16(const uint32_t *xp, int64_t ldq, int64_t m, const PackedWeight &w,
              const float *bias, float *c, int64_t ldc, int64_t panelBegin,
              int64_t panelEnd);
void gemmI8(const uint8_t *xq, int64_t ldq, const float *xs, int64_t m,
            const PackedWeight &w, const float *bias, float *c, int64_t ldc,
            int64_t panelBegin, int64_t panelEnd);
} // namespace emu

} // namespace ds::rt::kernels::amx

#endif // DS_RT_KERNELS_AMXTILES_H
