//===- Gemm.cpp - weight packing, GEMM dispatch and the expert FFN --------===//
//
// Packs [N, K] weights into 16-column K-major panels, picks the AVX-512 or
// AVX2 microkernel once per process, splits column groups over the thread
// pool, and runs the routed experts of a fused MoE over only the experts
// that received tokens.
//
//===----------------------------------------------------------------------===//

#include "AmxTiles.h"
#include "DotTiles.h"
#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"
#include "ds/support/DType.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace ds::rt::kernels {
namespace avx512 {
void gemmPanels(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
                const float *bias, float *c, int64_t ldc, int64_t panelBegin,
                int64_t panelEnd);
int64_t panelsPerGroup(int64_t m);
int64_t tallRows();
uint64_t tallScratchBytes(int64_t m, int64_t k, WeightFormat format);
uint64_t tallScratchBytesUpTo(int64_t m, int64_t k, WeightFormat format);
} // namespace avx512
namespace avx2 {
void gemmPanels(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
                const float *bias, float *c, int64_t ldc, int64_t panelBegin,
                int64_t panelEnd);
int64_t panelsPerGroup(int64_t m);
int64_t tallRows();
uint64_t tallScratchBytes(int64_t m, int64_t k, WeightFormat format);
uint64_t tallScratchBytesUpTo(int64_t m, int64_t k, WeightFormat format);
} // namespace avx2

namespace bf16dot {
void gemmPanels(const uint32_t *xp, int64_t ldq, int64_t m,
                const PackedWeight &w, const float *bias, float *c, int64_t ldc,
                int64_t panelBegin, int64_t panelEnd);
} // namespace bf16dot

void gemmI8Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, ThreadPool *pool);
uint64_t gemmI8DotScratchBytes(int64_t m, int64_t k);
void gemmI4Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
               const float *bias, float *c, int64_t ldc, ThreadPool *pool);
uint64_t gemmI4DotScratchBytes(int64_t m, int64_t k, int64_t group);

bool hasAvx512() {
  // DS_CPU_AVX2=1 forces the AVX2 kernels (tests cover both paths on one
  // machine).
  static const bool has = !avx2Forced() && cpuInfo().avx512f &&
                          cpuInfo().avx512bw && cpuInfo().avx512vl;
  return has;
}

bool hasBF16Dot() {
  static const bool has = hasAvx512() && cpuInfo().avx512bf16;
  return has;
}

namespace {
/// Whether the CPU's tiles can run the tile kernels: AMX-TILE, -BF16 and
/// -INT8 beside AVX-512, and Linux granted the process the tile state.
bool amxHardware() {
  static const bool has = hasAvx512() && cpuInfo().amxTile &&
                          cpuInfo().amxBf16 && cpuInfo().amxInt8 &&
                          amx::hw::requestTiles();
  return has;
}

AmxMode amxFromEnvironment() {
  const char *v = std::getenv("DS_CPU_AMX");
  const std::string mode = v ? v : "";
  if (mode == "emulate")
    return AmxMode::Emulated;
  if (mode == "0" || mode == "off" || avx2Forced())
    return AmxMode::Off;
  return amxHardware() ? AmxMode::Hardware : AmxMode::Off;
}

/// -1 until the first amxMode(), then an AmxMode.
std::atomic<int32_t> amxModeNow{-1};
} // namespace

AmxMode amxMode() {
  int32_t now = amxModeNow.load(std::memory_order_relaxed);
  if (now < 0) {
    static const AmxMode initial = amxFromEnvironment();
    amxModeNow.compare_exchange_strong(now, static_cast<int32_t>(initial));
    now = amxModeNow.load(std::memory_order_relaxed);
  }
  return static_cast<AmxMode>(now);
}

AmxMode setAmxMode(AmxMode mode) {
  const AmxMode before = amxMode();
  if (mode == AmxMode::Hardware && !amxHardware())
    mode = AmxMode::Off;
  amxModeNow.store(static_cast<int32_t>(mode), std::memory_order_relaxed);
  return before;
}

namespace {
int64_t numPanels(int64_t n) { return (n + kPanel - 1) / kPanel; }

/// Whether gemm takes a bf16 dot-product path (AMX tiles or vdpbf16ps)
/// for these inputs.
bool bf16Dot(WeightFormat format, Round inputs) {
  return inputs == Round::BF16 && format == WeightFormat::BF16 &&
         (amxMode() != AmxMode::Off || hasBF16Dot());
}

/// Row stride, in (k, k + 1) pairs, of the bf16 activations: padded by a
/// cache line so that rows at a power-of-two K do not share L1 sets (and
/// holding the tile kernels' zero-padded last chunk).
int64_t pairStride(int64_t k) { return (k + 1) / 2 + 16; }
static_assert(amx::kChunk <= 16, "pairStride pads to whole tile chunks");

uint64_t bf16DotScratchBytes(int64_t m, int64_t k) {
  return scratchRound(4 * static_cast<uint64_t>(m * pairStride(k)));
}

/// c = a · Wᵀ (+ bias) for bf16 weights and rows of a that are bf16
/// values, by AMX tiles (AmxTiles.h) or vdpbf16ps (GemmBF16.cpp): the rows
/// become bf16 pairs here, zero-padded to the tiles' whole chunks.
void gemmBF16Dot(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
                 const float *bias, float *c, int64_t ldc, ThreadPool *pool) {
  const int64_t k = w.k, ldq = pairStride(k), padded = amx::paddedPairs(k);
  // Taken as bf16DotScratchBytes counts it.
  ThreadScratch::Scope scope;
  uint32_t *xp = scope.array<uint32_t>(m * ldq);
  for (int64_t r = 0; r < m; ++r) {
    const float *row = a + r * lda;
    uint32_t *dst = xp + r * ldq;
    for (int64_t j = 0; 2 * j < k; ++j) {
      uint32_t lo = ds::floatToBF16(row[2 * j]);
      uint32_t hi = 2 * j + 1 < k ? ds::floatToBF16(row[2 * j + 1]) : 0;
      dst[j] = lo | hi << 16;
    }
    std::fill(dst + (k + 1) / 2, dst + padded, 0u);
  }
  switch (amxMode()) {
  case AmxMode::Hardware:
    // Pairs of panels (a tile block's width), one contiguous chunk a
    // thread: each thread interleaves its panels once.
    return splitPanels(w, m, 2, true, pool, [&](int64_t p0, int64_t p1) {
      amx::hw::gemmBF16(xp, ldq, m, w, bias, c, ldc, p0, p1);
    });
  case AmxMode::Emulated:
    return splitPanels(w, m, 2, true, pool, [&](int64_t p0, int64_t p1) {
      amx::emu::gemmBF16(xp, ldq, m, w, bias, c, ldc, p0, p1);
    });
  case AmxMode::Off:
    break;
  }
  // 4-panel groups (the kernel's widest tile), one contiguous chunk a
  // thread.
  splitPanels(w, m, 4, true, pool, [&](int64_t p0, int64_t p1) {
    bf16dot::gemmPanels(xp, ldq, m, w, bias, c, ldc, p0, p1);
  });
}
} // namespace

size_t packedWeightBytes(WeightFormat format, int64_t n, int64_t k,
                         int64_t group) {
  size_t panels = static_cast<size_t>(numPanels(n));
  size_t uk = static_cast<size_t>(k);
  size_t groups = group > 0 ? static_cast<size_t>((k + group - 1) / group) : 1;
  switch (format) {
  case WeightFormat::F32:
    break;
  case WeightFormat::I8:
    return panels * uk * kPanel + panels * kPanel * sizeof(float);
  case WeightFormat::I4:
    return panels * uk * (kPanel / 2) +
           panels * groups * kPanel * sizeof(float);
  case WeightFormat::I4H:
    return panels * uk * (kPanel / 2) +
           panels * groups * kPanel * sizeof(uint16_t);
  case WeightFormat::F8:
    return panels * uk * kPanel + panels * groups * kPanel * sizeof(float);
  case WeightFormat::I8Dot:
    return panels * ((uk + 3) / 4 * 4) * kPanel +
           panels * kPanel * (sizeof(float) + sizeof(int32_t));
  case WeightFormat::I4Dot:
    return panels * groups * static_cast<size_t>(group) * (kPanel / 2) +
           panels * groups * kPanel * sizeof(uint16_t);
  case WeightFormat::S24:
    return panels * (uk / 4) * kPanel * (2 * sizeof(float) + 1);
  case WeightFormat::BF16:
  case WeightFormat::F16:
    return panels * uk * kPanel * sizeof(uint16_t);
  }
  return panels * uk * kPanel * sizeof(float);
}

namespace {
/// Scales [n, groups] into [panels][groups][16] (zero-padded columns).
float *packGroupScales(const float *scales, int64_t n, int64_t groups,
                       float factor, float *dst) {
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        *dst++ = row < n ? scales[row * groups + g] * factor : 0.0f;
      }
  return dst;
}
} // namespace

void packWeightS24(const float *w, int64_t n, int64_t k, void *out) {
  int64_t groups = k / 4;
  auto *values = static_cast<float *>(out);
  auto *meta =
      reinterpret_cast<uint8_t *>(values + numPanels(n) * groups * 2 * kPanel);
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        int first = 0, second = 1;
        float v[4] = {0, 0, 0, 0};
        if (row < n) {
          for (int i = 0; i < 4; ++i)
            v[i] = w[row * k + g * 4 + i];
          // The two largest magnitudes, ties to the lower index.
          first = 0;
          for (int i = 1; i < 4; ++i)
            if (std::abs(v[i]) > std::abs(v[first]))
              first = i;
          second = first == 0 ? 1 : 0;
          for (int i = 0; i < 4; ++i)
            if (i != first && std::abs(v[i]) > std::abs(v[second]))
              second = i;
          if (second < first)
            std::swap(first, second);
        }
        float *dst = values + ((p * groups + g) * 2) * kPanel;
        dst[j] = v[first];
        dst[kPanel + j] = v[second];
        meta[(p * groups + g) * kPanel + j] =
            static_cast<uint8_t>(first | (second << 2));
      }
}

namespace {
/// packWeightI4's nibble panels; returns where the scales go.
uint8_t *packNibbles(const float *q, int64_t n, int64_t k, void *out) {
  auto *dst = static_cast<uint8_t *>(out);
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t kk = 0; kk < k; ++kk) {
      // 16 nibbles in 64 bits: column 2i at bit 4i, column 2i + 1 at bit
      // 32 + 4i (the kernels' loadWeights reads them this way).
      uint64_t bits = 0;
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        if (row >= n)
          continue;
        int v = static_cast<int>(q[row * k + kk]);
        uint64_t nibble = static_cast<uint64_t>(std::clamp(v, -8, 7) & 15);
        bits |= nibble << ((j % 2) * 32 + 4 * (j / 2));
      }
      std::memcpy(dst, &bits, sizeof bits);
      dst += sizeof bits;
    }
  return dst;
}
} // namespace

void packWeightI4(const float *q, const float *scales, int64_t n, int64_t k,
                  int64_t group, void *out) {
  packGroupScales(scales, n, (k + group - 1) / group, 1.0f,
                  reinterpret_cast<float *>(packNibbles(q, n, k, out)));
}

void packWeightI4H(const float *q, const float *scales, int64_t n, int64_t k,
                   int64_t group, void *out) {
  auto *dst = reinterpret_cast<uint16_t *>(packNibbles(q, n, k, out));
  const int64_t groups = (k + group - 1) / group;
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        *dst++ = row < n ? ds::floatToHalf(scales[row * groups + g]) : 0;
      }
}

void packWeightF8(const float *values, const float *scales, int64_t n,
                  int64_t k, int64_t group, void *out) {
  auto *dst = static_cast<uint8_t *>(out);
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        *dst++ = row < n ? ds::floatToF8E4M3(values[row * k + kk]) : 0;
      }
  // The kernel widens e4m3 to value * 2^-8: fold 2^8 into the scales.
  packGroupScales(scales, n, (k + group - 1) / group, 256.0f,
                  reinterpret_cast<float *>(dst));
}

namespace {
/// Row-major [n, k] values into 16-column panels ([panels][k][16], padded
/// columns zero), each element converted by `convert`.
template <typename T, typename Convert>
void packPanels(const float *w, int64_t n, int64_t k, void *out,
                Convert convert) {
  T *dst = static_cast<T *>(out);
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        *dst++ = row < n ? convert(w[row * k + kk]) : T{0};
      }
}
} // namespace

void packWeightF32(const float *w, int64_t n, int64_t k, void *out) {
  packPanels<float>(w, n, k, out, [](float x) { return x; });
}

void packWeightBF16(const float *w, int64_t n, int64_t k, void *out) {
  packPanels<uint16_t>(w, n, k, out, ds::floatToBF16);
}

void packWeightF16(const float *w, int64_t n, int64_t k, void *out) {
  packPanels<uint16_t>(w, n, k, out, ds::floatToHalf);
}

void packWeightI8(const int8_t *q, const float *scales, int64_t n, int64_t k,
                  void *out) {
  int8_t *dst = static_cast<int8_t *>(out);
  for (int64_t p = 0; p < numPanels(n); ++p)
    for (int64_t kk = 0; kk < k; ++kk)
      for (int64_t j = 0; j < kPanel; ++j) {
        int64_t row = p * kPanel + j;
        *dst++ = row < n ? q[row * k + kk] : 0;
      }
  float *s = reinterpret_cast<float *>(dst);
  for (int64_t j = 0; j < numPanels(n) * kPanel; ++j)
    s[j] = j < n ? scales[j] : 0.0f;
}

namespace {
/// gemmScratch for m rows, or for any row count up to m (`upTo`): the
/// dot-product paths take their caller's quantized / paired rows, growing
/// with m; the packed-panel path is per ISA.
ThreadScratchNeed gemmScratchFor(int64_t m, int64_t k, WeightFormat format,
                                 Round inputs, bool upTo) {
  if (m <= 0)
    return {};
  if (bf16Dot(format, inputs)) {
    // The tile kernels interleave two panels on every thread of a split.
    const uint64_t tiles =
        amxMode() != AmxMode::Off ? amx::bf16ScratchBytes(k) : 0;
    return {bf16DotScratchBytes(m, k) + tiles, tiles};
  }
  if (format == WeightFormat::I8Dot)
    return {gemmI8DotScratchBytes(m, k), 0};
  if (format == WeightFormat::I4Dot)
    return {gemmI4DotScratchBytes(m, k, 8), 0}; // groups of 8 at least
  // Every thread of a split runs its panels over all m rows.
  const bool wide = hasAvx512();
  return ThreadScratchNeed::everywhere(
      upTo ? (wide ? avx512::tallScratchBytesUpTo(m, k, format)
                   : avx2::tallScratchBytesUpTo(m, k, format))
           : (wide ? avx512::tallScratchBytes(m, k, format)
                   : avx2::tallScratchBytes(m, k, format)));
}
} // namespace

ThreadScratchNeed gemmScratch(int64_t m, int64_t k, WeightFormat format,
                              Round inputs) {
  return gemmScratchFor(m, k, format, inputs, /*upTo=*/false);
}

ThreadScratchNeed gemmScratchUpTo(int64_t m, int64_t k, WeightFormat format,
                                  Round inputs) {
  return gemmScratchFor(m, k, format, inputs, /*upTo=*/true);
}

void gemm(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
          const float *bias, float *c, int64_t ldc, ThreadPool *pool,
          Round inputs) {
  if (m <= 0 || w.n <= 0)
    return;
  if (bf16Dot(w.format, inputs))
    return gemmBF16Dot(a, m, lda, w, bias, c, ldc, pool);
  if (w.format == WeightFormat::I8Dot)
    return gemmI8Dot(a, m, lda, w, bias, c, ldc, pool);
  if (w.format == WeightFormat::I4Dot)
    return gemmI4Dot(a, m, lda, w, bias, c, ldc, pool);
  const bool wide = hasAvx512();
  const int64_t per =
      wide ? avx512::panelsPerGroup(m) : avx2::panelsPerGroup(m);
  // Many rows: each call packs the activations it reads (gemmTall), so the
  // panel groups go out in one contiguous chunk per thread, not one group
  // at a time (which packed them again for every group).
  const int64_t tall = wide ? avx512::tallRows() : avx2::tallRows();
  splitPanels(w, m, per, m > tall, pool, [&](int64_t p0, int64_t p1) {
    if (wide)
      avx512::gemmPanels(a, m, lda, w, bias, c, ldc, p0, p1);
    else
      avx2::gemmPanels(a, m, lda, w, bias, c, ldc, p0, p1);
  });
}

namespace {
/// moeExperts' scratch, carved from one region: the dispatch tables, then
/// every expert's output rows in bucket order, then the gathered inputs and
/// gate/up and hidden activations. Serially, experts reuse the first
/// `maxRows` rows of the last three (hot in cache); side by side on
/// workers, each expert uses its own bucket's rows of them.
struct MoEScratch {
  int64_t *offsets, *rows, *fill, *used;
  float *out, *xs, *gu, *hid;

  static uint64_t align(uint64_t bytes) { return (bytes + 63) & ~63ULL; }
  static uint64_t bytes(int64_t n, int64_t h, int64_t topK, int64_t e,
                        int64_t inter) {
    const uint64_t slots = static_cast<uint64_t>(n * topK);
    return align(8 * (e + 1)) + align(8 * slots) + 2 * align(8 * e) +
           align(4 * slots * h) + align(4 * slots * h) +
           align(4 * slots * 2 * inter) + align(4 * slots * inter);
  }
  MoEScratch(void *region, int64_t n, int64_t h, int64_t topK, int64_t e,
             int64_t inter) {
    auto *p = static_cast<uint8_t *>(region);
    const uint64_t slots = static_cast<uint64_t>(n * topK);
    auto take = [&](uint64_t size) {
      uint8_t *at = p;
      p += align(size);
      return at;
    };
    offsets = reinterpret_cast<int64_t *>(take(8 * (e + 1)));
    rows = reinterpret_cast<int64_t *>(take(8 * slots));
    fill = reinterpret_cast<int64_t *>(take(8 * e));
    used = reinterpret_cast<int64_t *>(take(8 * e));
    out = reinterpret_cast<float *>(take(4 * slots * h));
    xs = reinterpret_cast<float *>(take(4 * slots * h));
    gu = reinterpret_cast<float *>(take(4 * slots * 2 * inter));
    hid = reinterpret_cast<float *>(take(4 * slots * inter));
  }
};
} // namespace

void moeCombine(const float *rows, int64_t n, int64_t h, const float *weights,
                const int32_t *indices, int64_t topK, float *y) {
  std::vector<int64_t> order(topK);
  for (int64_t t = 0; t < n; ++t) {
    // The token's slots by expert, ties in slot order (as the
    // interpreter's stable dispatch and moeExperts' buckets add them).
    for (int64_t j = 0; j < topK; ++j)
      order[j] = t * topK + j;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return indices[a] < indices[b];
    });
    float *dst = y + t * h;
    std::fill(dst, dst + h, 0.0f);
    for (int64_t slot : order) {
      const float w = weights[slot];
      const float *src = rows + slot * h;
      for (int64_t c = 0; c < h; ++c)
        dst[c] += w * src[c];
    }
  }
}

uint64_t moeExpertsScratchBytes(int64_t n, int64_t h, int64_t topK,
                                int64_t numExperts, int64_t inter) {
  return MoEScratch::bytes(n, h, topK, numExperts, inter);
}

int64_t moeExperts(const float *x, int64_t n, int64_t h, const float *weights,
                   const int32_t *indices, int64_t topK, int64_t numExperts,
                   const PackedWeight *gateUp, const PackedWeight *down,
                   int64_t inter, Act act, float *y, ThreadPool *pool,
                   const std::function<void(float *, int64_t, int64_t)> &hidden,
                   Round round, void *scratch, ExpertBlock block) {
  const int64_t routed = block.routed > 0 ? block.routed : numExperts;
  const int64_t first = block.routed > 0 ? block.first : 0;
  for (int64_t i = 0; i < n * topK; ++i)
    if (indices[i] < 0 || indices[i] >= routed)
      return indices[i];
  // This block's expert of slot i, or -1.
  auto local = [&](int64_t i) -> int64_t {
    int64_t e = indices[i] - first;
    return e >= 0 && e < numExperts ? e : -1;
  };
  // Called directly (tests, benchmarks): the calling thread's scratch.
  ThreadScratch::Scope scope;
  if (!scratch)
    scratch = scope.bytes(MoEScratch::bytes(n, h, topK, numExperts, inter));
  const MoEScratch ws(scratch, n, h, topK, numExperts, inter);
  // Bucket (token, choice) pairs by expert, in token order, as the
  // reference's stable dispatch does.
  int64_t *offsets = ws.offsets, *rows = ws.rows, *fill = ws.fill;
  std::fill(offsets, offsets + numExperts + 1, int64_t{0});
  for (int64_t i = 0; i < n * topK; ++i)
    if (int64_t e = local(i); e >= 0)
      ++offsets[e + 1];
  for (int64_t e = 0; e < numExperts; ++e)
    offsets[e + 1] += offsets[e];
  std::copy(offsets, offsets + numExperts, fill);
  for (int64_t i = 0; i < n * topK; ++i)
    if (int64_t e = local(i); e >= 0)
      rows[fill[e]++] = i;
  int64_t maxRows = 0, active = 0;
  for (int64_t e = 0; e < numExperts; ++e) {
    maxRows = std::max(maxRows, offsets[e + 1] - offsets[e]);
    if (offsets[e + 1] > offsets[e])
      ws.used[active++] = e;
  }
  const int64_t *off = offsets, *bucket = rows;
  // One expert's FFN over its rows, into dst (count x h), its intermediate
  // results `at` rows into the scratch.
  auto expert = [&](int64_t e, float *dst, int64_t at, ThreadPool *gemmPool) {
    int64_t begin = off[e], count = off[e + 1] - begin;
    float *xs = ws.xs + at * h, *gu = ws.gu + at * 2 * inter,
          *hid = ws.hid + at * inter;
    for (int64_t r = 0; r < count; ++r)
      std::memcpy(&xs[r * h], x + (bucket[begin + r] / topK) * h,
                  h * sizeof(float));
    gemm(xs, count, h, gateUp[e], nullptr, gu, 2 * inter, gemmPool, round);
    roundValues(gu, count * 2 * inter, round);
    glu(gu, count, inter, act, hid);
    roundValues(hid, count * inter, round);
    if (hidden)
      hidden(hid, count, inter);
    gemm(hid, count, inter, down[e], nullptr, dst, h, gemmPool,
         hidden ? Round::None : round);
    roundValues(dst, count * h, round);
  };
  // Every expert's output rows, in bucket order.
  float *out = ws.out;
  const int64_t threads = pool ? pool->numWorkers() + 1 : 1;
  // Below ~1 MFLOP a parallel split costs more than it saves.
  const int64_t total = offsets[numExperts]; // rows of this block's experts
  const double flops = 6.0 * static_cast<double>(total) * h * inter;
  if (threads > 1 && flops >= 1e6 && active >= threads &&
      maxRows * threads <= 2 * total) {
    // Experts side by side, one thread each (no expert holds more than
    // twice its share of the rows): each GEMM runs whole on one thread, with
    // no split and no activations packed twice. A row's arithmetic is the
    // same as in the split GEMMs.
    const int64_t *used = ws.used;
    pool->parallelFor(active, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        expert(used[i], out + off[used[i]] * h, off[used[i]], nullptr);
    });
  } else {
    for (int64_t i = 0; i < active; ++i)
      expert(ws.used[i], out + off[ws.used[i]] * h, 0, pool);
  }
  // Combine in expert order, as the reference's stable dispatch adds.
  std::fill(y, y + n * h, 0.0f);
  for (int64_t e = 0; e < numExperts; ++e)
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      int64_t slot = rows[r];
      float w = weights[slot];
      float *dst = y + (slot / topK) * h;
      const float *src = &out[r * h];
      for (int64_t c = 0; c < h; ++c)
        dst[c] += w * src[c];
    }
  return -1;
}

} // namespace ds::rt::kernels
