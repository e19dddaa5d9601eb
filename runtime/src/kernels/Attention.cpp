//===- Attention.cpp - causal attention over slot-indexed KV caches -------===//
//
// MHA/GQA attention and DeepSeek's MLA in absorbed form. A query at position
// p reads only cache rows [first, p] of its batch row's slot (first > 0 with
// a sliding window). Scores and the weighted value sum accumulate in f32; the
// softmax normalizer is summed in double as the interpreter does. Work items
// are a query row (or a run of prefill rows) and a block of heads, split
// over the thread pool when the loop is large enough to pay for waking it.
// Within an item the (row, head) entries that share key / value rows (a GQA
// group, a prefill run, all MLA heads) read each row once, in blocks of rows
// that stay in L1 (or in L2 for the AVX2 weighted sums over copied rows:
// rowBlockL2), with several dot products or weighted-sum accumulators in
// flight; every head's arithmetic is that of the plain per-head loop (the
// same FMAs in the same order), whatever the blocking, so results do not
// depend on the thread count, the batch, or whether a row is prefilled or
// decoded. Scores of an item are all computed before its softmax (two
// passes, not the online rescaling of flash attention, which would make a
// row's bits depend on the key blocks): the score rows of a run are bounded
// by sizing the run (queryRun).
//
//===----------------------------------------------------------------------===//

#include "AttentionBlocks.h"
#include "Math.h"
#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"
#include "ds/support/DType.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <immintrin.h>
#include <limits>
#include <type_traits>
#include <vector>

namespace ds::rt::kernels {

namespace {

/// Σ a[c] b[c] in f32, in kLanes partial sums (one vector register) that
/// are then added pairwise, so that both the loop and the reduction
/// vectorize without reassociation flags.
inline float dot(const float *a, const float *b, int64_t n) {
  constexpr int kLanes = 8;
  float part[kLanes] = {};
  int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int i = 0; i < kLanes; ++i)
      part[i] += a[c + i] * b[c + i];
  for (int i = 0; c < n; ++c, ++i)
    part[i] += a[c] * b[c];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int i = 0; i < w; ++i)
      part[i] += part[i + w];
  return part[0];
}

/// Eight dots' 8-lane sums (sum[h][j], dot h * K + j) reduced together
/// into out[0, 8): dot's pairwise reduction (lanes i + 4, then i + 2, then
/// i + 1) as whole-register adds of transposed halves, 7 adds and 14
/// shuffles for the eight instead of 6 operations each.
template <int K, typename V>
__attribute__((always_inline)) inline void reduce8(const V (*sum)[K],
                                                   float *out) {
  static_assert(K == 1 || K == 2 || K == 4 || K == 8, "eight dots");
  __m256 v[8];
  for (int d = 0; d < 8; ++d)
    v[d] = reinterpret_cast<__m256>(sum[d / K][d % K]);
  // Lanes i + 4: dots d and d + 4 share a register, d's halves in the low
  // 128 bits.
  __m256 f[4];
  for (int d = 0; d < 4; ++d)
    f[d] = _mm256_add_ps(_mm256_permute2f128_ps(v[d], v[d + 4], 0x20),
                         _mm256_permute2f128_ps(v[d], v[d + 4], 0x31));
  // Lanes i + 2: [d0 d0 d1 d1 | d4 d4 d5 d5] and the same for d2, d3.
  __m256 t01 = _mm256_add_ps(_mm256_shuffle_ps(f[0], f[1], 0x44),
                             _mm256_shuffle_ps(f[0], f[1], 0xee));
  __m256 t23 = _mm256_add_ps(_mm256_shuffle_ps(f[2], f[3], 0x44),
                             _mm256_shuffle_ps(f[2], f[3], 0xee));
  // Lanes i + 1: dots 0..3 in the low half, 4..7 in the high.
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_shuffle_ps(t01, t23, 0x88),
                                      _mm256_shuffle_ps(t01, t23, 0xdd)));
}

/// N x K dots at once, out[h * K + j] = dot(a[h], b[j], n), each with
/// exactly dot's arithmetic (one FMA per element into 8 lane sums, then the
/// same pairwise reduction): N * K independent FMA chains in flight, every
/// a and b vector loaded once for all of them.
template <int N, int K>
inline void dotGrid(const float *const *a, const float *const *b, int64_t n,
                    float *out) {
  typedef float v8 __attribute__((vector_size(32), aligned(4)));
  v8 sum[N][K] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    v8 y[K];
    for (int j = 0; j < K; ++j)
      std::memcpy(&y[j], b[j] + c, sizeof(v8));
    for (int h = 0; h < N; ++h) {
      v8 x;
      std::memcpy(&x, a[h] + c, sizeof x);
      for (int j = 0; j < K; ++j)
        sum[h][j] += x * y[j];
    }
  }
  if constexpr (N * K == 8)
    if (c == n) {
      reduce8(sum, out);
      return;
    }
  if (c == n) {
    // dot's pairwise reduction (lanes i + 4, then i + 2, then i + 1) with
    // vector adds.
    for (int h = 0; h < N; ++h)
      for (int j = 0; j < K; ++j) {
        __m256 v = reinterpret_cast<__m256>(sum[h][j]);
        __m128 four =
            _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        out[h * K + j] =
            _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
      }
    return;
  }
  for (int h = 0; h < N; ++h)
    for (int j = 0; j < K; ++j) {
      float part[8];
      std::memcpy(part, &sum[h][j], sizeof part);
      int64_t cc = c;
      for (int i = 0; cc < n; ++cc, ++i)
        part[i] += a[h][cc] * b[j][cc];
      for (int w = 4; w > 0; w /= 2)
        for (int i = 0; i < w; ++i)
          part[i] += part[i + w];
      out[h * K + j] = part[0];
    }
}

/// Eight elements of a narrow cache row from column c, as f32: exactly
/// widenRow's AVX2 arithmetic (bf16 shifted, f16 converted, e4m3 through
/// the f16 of value * 2^-8 times 2^8 scale, NaN kept), so that loops
/// reading a narrow row in place compute what they would on its widened
/// copy.
__attribute__((always_inline)) inline __m256
widen8(const void *row, KVType type, int64_t c, float scale) {
  if (type == KVType::F8E4M3) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(
        static_cast<const uint8_t *>(row) + c));
    __m128i h = _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7),
                              _mm_set1_epi16(static_cast<short>(0xbf80)));
    __m256 v =
        _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f * scale));
    __m128i isNan16 = _mm_cvtepi8_epi16(_mm_cmpeq_epi8(
        _mm_and_si128(bytes, _mm_set1_epi8(0x7f)), _mm_set1_epi8(0x7f)));
    __m256 isNan = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(isNan16));
    return _mm256_blendv_ps(
        v, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), isNan);
  }
  __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i *>(
      static_cast<const uint16_t *>(row) + c));
  if (type == KVType::BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
  return _mm256_cvtph_ps(x);
}

/// dotGrid<4, 2> (the same arithmetic) against two rows of a narrow cache
/// read in place and widened in registers (n a multiple of 8).
template <KVType Type>
inline void dotGridNarrow(const float *const *a, const void *const *b,
                          int64_t n, float scale, float *out) {
  typedef float v8 __attribute__((vector_size(32), aligned(4)));
  v8 sum[4][2] = {};
  for (int64_t c = 0; c < n; c += 8) {
    v8 y[2];
    for (int j = 0; j < 2; ++j)
      y[j] = reinterpret_cast<v8>(widen8(b[j], Type, c, scale));
    for (int h = 0; h < 4; ++h) {
      v8 x;
      std::memcpy(&x, a[h] + c, sizeof x);
      for (int j = 0; j < 2; ++j)
        sum[h][j] += x * y[j];
    }
  }
  reduce8(sum, out);
}

/// A table of cache rows as the blocked loops read it: per head, the first
/// row it reads (elements of `type`), rows `stride` elements apart.
struct RowTable {
  const void *const *base;
  int64_t stride;
  KVType type = KVType::F32;
  /// An e4m3 table's scale.
  float scale = 1.0f;
};

/// Rows [j0, j1) of a RowTable's first n columns as f32, for the heads
/// that share them: an f32 table read by at most kInPlaceHeads heads per
/// row (a GQA decode group) is read where it is; a narrow one, or one that
/// many heads share (prefill runs, MLA), is copied (widened) into the
/// calling thread's scratch, once per run of heads that share their rows,
/// when the loops first ask for those heads (need()), so that the rows are
/// read from L1 by every head: cache rows lie a power of two apart (8 KV
/// heads of 128 floats: 4 KiB), so a block read in place maps to a few L1
/// sets and is evicted before the next heads read it. The loops then do the
/// arithmetic of an f32 table holding the same values. Row j of head i is
/// rows()[i] + (j - shift) * stride. (A narrow table read by few heads per
/// row, GQA decode, is widened in registers instead where the loops can:
/// directNarrow on AVX-512, directNarrowAvx2; its block is then unused.)
class F32Block {
public:
  static constexpr int64_t kInPlaceHeads = 4;

  /// Room, from `scope`, for the heads of `t` (nh of them) in blocks of up
  /// to `maxCount` rows of n columns: taken as bytes() counts it.
  F32Block(ThreadScratch::Scope &scope, const RowTable &t, int64_t nh,
           int64_t n, int64_t maxCount)
      : heads(nh) {
    ptrs = scope.array<const float *>(nh);
    pack = copies(t.type, longestRun(t, nh));
    if (pack)
      buffer = scope.array<float>(distinctRows(t, nh) * maxCount * n);
  }
  /// Whether a table of `type` whose longest run of heads sharing rows is
  /// `longest` is copied.
  static bool copies(KVType type, int64_t longest) {
    return type != KVType::F32 || longest > kInPlaceHeads;
  }
  /// Scratch bytes of a block for nh heads, `distinct` of them with rows
  /// of their own (runs of equal table entries), the longest run of heads
  /// sharing rows `longest` long.
  static uint64_t bytes(int64_t nh, int64_t n, int64_t maxCount,
                        int64_t distinct, int64_t longest, KVType type) {
    uint64_t b = scratchRound(sizeof(float *) * static_cast<uint64_t>(nh));
    if (copies(type, longest))
      b += scratchRound(4 * static_cast<uint64_t>(distinct * maxCount * n));
    return b;
  }
  static int64_t distinctRows(const RowTable &t, int64_t nh) {
    int64_t distinct = 0;
    for (int64_t i = 0; i < nh; ++i)
      distinct += i == 0 || t.base[i] != t.base[i - 1];
    return distinct;
  }
  static int64_t longestRun(const RowTable &t, int64_t nh) {
    int64_t run = 0, longest = 0;
    for (int64_t i = 0; i < nh; ++i) {
      run = i > 0 && t.base[i] == t.base[i - 1] ? run + 1 : 1;
      longest = std::max(longest, run);
    }
    return longest;
  }

  void load(const RowTable &t, int64_t nh, int64_t n, int64_t j0, int64_t j1) {
    std::fill(ptrs, ptrs + heads, nullptr);
    table = t;
    cols = n;
    firstRow = j0;
    count = j1 - j0;
    if (!pack) {
      for (int64_t i = 0; i < nh; ++i)
        ptrs[i] = static_cast<const float *>(t.base[i]);
      stride = t.stride;
      shift = 0;
      return;
    }
    stride = n;
    shift = j0;
    next = buffer;
  }
  /// Heads [i0, i1) readable through rows(). A run of heads sharing rows
  /// is widened whole, once, into the next of the buffer's `distinct`
  /// slots, whatever order the heads are asked for in.
  void need(int64_t i0, int64_t i1) {
    if (!pack)
      return;
    const int64_t size = kvTypeSize(table.type);
    for (int64_t i = i0; i < i1; ++i) {
      if (ptrs[i])
        continue;
      int64_t first = i; // the run's first head: unset as well
      while (first > 0 && table.base[first - 1] == table.base[i])
        --first;
      const char *row = static_cast<const char *>(table.base[first]);
      for (int64_t j = 0; j < count; ++j)
        widenRow(row + (firstRow + j) * table.stride * size, table.type, cols,
                 next + j * cols, table.scale);
      for (int64_t h = first; h < heads && table.base[h] == table.base[first];
           ++h)
        ptrs[h] = next;
      next += count * cols;
    }
  }
  const float *const *rows() const { return ptrs; }
  int64_t stride = 0, shift = 0;

private:
  int64_t heads;
  bool pack = false;
  const float **ptrs = nullptr;
  float *buffer = nullptr;
  RowTable table{nullptr, 0};
  float *next = nullptr;
  int64_t cols = 0, firstRow = 0, count = 0;
};

/// Software prefetch of the rows a later block will read: the first n
/// columns of rows [j0, j1) of every head's table, issued a few lines at a
/// time while the current block computes. The blocked loops read each row
/// only a 64-byte column at a time, 4 KiB or more apart, which the hardware
/// prefetchers do not follow.
struct RowPrefetch {
  const char *lo = nullptr, *at = nullptr; // first line; the next to fetch
  int64_t rowBytes = 0, lines = 0, total = 0, next = 0, line = 0;
  int64_t perStep = 0;
  RowPrefetch() = default;
  RowPrefetch(const RowTable &t, int64_t count, int64_t n, int64_t j0,
              int64_t j1) {
    if (count <= 0 || j1 <= j0)
      return;
    const int64_t size = kvTypeSize(t.type);
    auto bytes = [&](int64_t i) {
      return static_cast<const char *>(t.base[i]);
    };
    const char *first = bytes(0), *last = bytes(0);
    for (int64_t i = 1; i < count; ++i) {
      first = std::min(first, bytes(i));
      last = std::max(last, bytes(i));
    }
    last += n * size;
    lo = at = first + j0 * t.stride * size;
    rowBytes = t.stride * size;
    lines = (last - first + 63) / 64;
    total = lines * (j1 - j0);
  }
  /// Spreads the lines over `steps` calls of step().
  void spread(int64_t steps) {
    perStep = (total + steps - 1) / std::max<int64_t>(steps, 1);
  }
  /// The next few lines (a trickle, not a burst that would fill the miss
  /// queues).
  void step() {
    for (int64_t end = std::min(total, next + perStep); next < end; ++next) {
      __builtin_prefetch(at + line * 64);
      if (++line == lines) {
        line = 0;
        at += rowBytes;
      }
    }
  }
};

/// Rows of n floats per block of the blocked loops (but the AVX2 weighted
/// sums over copied rows, rowBlockL2): half of L1d, so that every head
/// group reads a block's rows from L1 (64 rows of an MLA latent, 2 KiB
/// each, stayed in L2 only, and the AVX-512 loops ran at L2's bandwidth);
/// a multiple of 4 in [8, 64]. Blocks do not change any result.
int64_t rowBlock(int64_t n) {
  static const int64_t l1 = cpuInfo().l1d;
  int64_t rows = l1 / 2 / std::max<int64_t>(n * 4, 1);
  return std::clamp<int64_t>(rows / 4 * 4, 8, 64);
}

/// Rows of n floats per block of the AVX2 weighted sums over rows copied
/// into a block (narrow caches, rows many heads share): half of L2. Their
/// 4 heads x 16 columns of accumulators read 64 bytes of rows per 8 FMAs,
/// which L2 sustains; what they cannot sustain is reloading and storing
/// the accumulators every few rows (MLA's 576-float rows gave blocks of 8
/// rows in half of a 32 KiB L1d: a load and a store per FMA).
int64_t rowBlockL2(int64_t n) {
  static const int64_t l2 = cpuInfo().l2;
  int64_t rows = l2 / 2 / std::max<int64_t>(n * 4, 1);
  return std::clamp<int64_t>(rows / 4 * 4, 8, 64);
}

/// Whether heads i0 .. i0 + 3 read the same rows (a GQA group, MLA).
template <typename T> inline bool sameRows4(const T *const *rows, int64_t i0) {
  return rows[i0] == rows[i0 + 1] && rows[i0] == rows[i0 + 2] &&
         rows[i0] == rows[i0 + 3];
}

/// Whether the AVX-512 loops read a narrow table's shared rows directly,
/// widening in registers: when few heads share each row (GQA decode: one
/// group), so that each element is widened once or twice; many sharing
/// heads (MLA, prefill runs) widen a block once per run instead.
bool directNarrow(const RowTable &t, int64_t nh) {
  if (t.type == KVType::F32 || !hasAvx512())
    return false;
  int64_t run = 0, longest = 0;
  for (int64_t i = 0; i < nh; ++i) {
    run = i > 0 && t.base[i] == t.base[i - 1] ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  return longest <= 8;
}

/// Whether the AVX2 loops read a narrow table in place, widening in
/// registers (widen8): when every group of four heads shares its rows and
/// no more than 8 heads share a row (GQA decode), with whole 16-column
/// strips. Otherwise they widen a block of rows into scratch.
bool directNarrowAvx2(const RowTable &t, int64_t nh, int64_t n) {
  if (t.type == KVType::F32 || hasAvx512() || nh % 4 != 0 || n % 16 != 0 ||
      F32Block::longestRun(t, nh) > 8)
    return false;
  for (int64_t i0 = 0; i0 < nh; i0 += 4)
    if (!sameRows4(t.base, i0))
      return false;
  return true;
}

/// Calls f(std::integral_constant<KVType, T>()) for a narrow type T.
template <typename F>
__attribute__((always_inline)) inline void withNarrowType(KVType type, F &&f) {
  switch (type) {
  case KVType::BF16:
    f(std::integral_constant<KVType, KVType::BF16>());
    break;
  case KVType::F16:
    f(std::integral_constant<KVType, KVType::F16>());
    break;
  case KVType::F8E4M3:
    f(std::integral_constant<KVType, KVType::F8E4M3>());
    break;
  default:
    break;
  }
}

/// The end of the rows heads [i0, i1) need: all `len` of them, or the
/// longest of their `lens` (prefill rows of a run end at their own
/// positions).
inline int64_t rowsNeeded(const int64_t *lens, int64_t i0, int64_t i1,
                          int64_t len) {
  if (!lens)
    return len;
  int64_t most = 0;
  for (int64_t i = i0; i < i1; ++i)
    most = std::max(most, lens[i]);
  return std::min(most, len);
}

/// s[i * ld + j] = dot(a[i], row j of head i of t, n) for heads i < nh and
/// rows j < len (attention scores before scaling); with `lens`, only rows
/// j < lens[i] are asked for (others may be left unwritten). Runs of four
/// heads that share their rows (GQA groups, MLA) take two rows at a time, 8
/// FMA chains per loaded vector; rows go in blocks that stay in L2 while
/// every head reads them.
void dotTable(const float *const *a, const RowTable &t, int64_t n, int64_t nh,
              int64_t len, float *s, int64_t ld,
              const int64_t *lens = nullptr) {
  const int64_t kRowBlock = rowBlock(n);
  const bool wide = hasAvx512();
  const int64_t perGroup = avx512::packedQueriesSize(n);
  // Taken as dotTableBytes counts them.
  ThreadScratch::Scope scope;
  float *packed = wide ? scope.array<float>((nh / 4) * perGroup) : nullptr;
  F32Block block(scope, t, nh, n, kRowBlock);
  const bool direct = directNarrow(t, nh);
  const bool direct2 = directNarrowAvx2(t, nh, n);
  const int64_t rowBytes = t.stride * kvTypeSize(t.type);
  for (int64_t j0 = 0; j0 < len; j0 += kRowBlock) {
    const int64_t j1 = std::min(len, j0 + kRowBlock);
    RowPrefetch ahead(t, nh, n, j1, std::min(len, j1 + kRowBlock));
    ahead.spread((nh / 4) * ((j1 - j0 + 1) / 2));
    block.load(t, nh, n, j0, j1);
    const float *const *base = block.rows();
    const int64_t stride = block.stride, sh = block.shift;
    int64_t i0 = 0;
    if (direct2) {
      // AVX2, the narrow rows read in place, widened in registers: the
      // arithmetic of the shared-rows loop below on their widened copy.
      withNarrowType(t.type, [&](auto type) {
        for (; i0 + 4 <= nh; i0 += 4) {
          const char *rows = static_cast<const char *>(t.base[i0]);
          float out[8];
          for (int64_t j = j0; j < j1; j += 2) {
            ahead.step();
            // An odd last row is computed twice (the same dot).
            const int64_t j2 = std::min(j + 1, j1 - 1);
            const void *b[2] = {rows + j * rowBytes, rows + j2 * rowBytes};
            dotGridNarrow<decltype(type)::value>(a + i0, b, n, t.scale, out);
            for (int h = 0; h < 4; ++h) {
              s[(i0 + h) * ld + j] = out[h * 2];
              s[(i0 + h) * ld + j2] = out[h * 2 + 1];
            }
          }
        }
      });
      continue;
    }
    for (; i0 + 4 <= nh; i0 += 4) {
      if (direct && sameRows4(t.base, i0)) {
        // The narrow rows read in place, widened in registers.
        float *q = packed + (i0 / 4) * perGroup;
        if (j0 == 0)
          avx512::packQueries4(a + i0, n, q);
        for (int64_t j = j0; j < j1; j += 8) {
          for (int u = 0; u < 4; ++u)
            ahead.step();
          avx512::dotRows4(q, a + i0, t.base[i0], t.type, t.scale, t.stride, n,
                           j, std::min(j1, j + 8), s + i0 * ld, ld);
        }
        continue;
      }
      if (wide && i0 + 8 <= nh && sameRows4(t.base, i0) &&
          sameRows4(t.base, i0 + 4) && t.base[i0] == t.base[i0 + 4]) {
        // AVX-512, 8 heads sharing their rows (prefill runs, MLA): four
        // pairs of heads against 4 rows at a time, the same arithmetic.
        block.need(i0, i0 + 8);
        float *q = packed + (i0 / 4) * perGroup;
        if (j0 == 0) {
          avx512::packQueries4(a + i0, n, q);
          avx512::packQueries4(a + i0 + 4, n, q + perGroup);
        }
        const int64_t end = std::min(j1, rowsNeeded(lens, i0, i0 + 8, len));
        for (int64_t j = j0; j < j1; j += 8) {
          for (int u = 0; u < 8; ++u)
            ahead.step();
          if (j < end)
            avx512::dotRows8(q, a + i0, base[i0], stride, n, j - sh,
                             std::min(end, j + 8) - sh, s + i0 * ld + sh, ld);
        }
        i0 += 4;
        continue;
      }
      block.need(i0, i0 + 4);
      const bool shared = sameRows4(base, i0);
      if (shared && wide) {
        // AVX-512: two heads per register, eight rows at a time, the same
        // arithmetic (AttentionBlocks.h); queries packed once per call.
        float *q = packed + (i0 / 4) * perGroup;
        if (j0 == 0)
          avx512::packQueries4(a + i0, n, q);
        for (int64_t j = j0; j < j1; j += 8) {
          for (int t = 0; t < 4; ++t)
            ahead.step();
          avx512::dotRows4(q, a + i0, base[i0], stride, n, j - sh,
                           std::min(j1, j + 8) - sh, s + i0 * ld + sh, ld);
        }
      } else if (shared) {
        int64_t j = j0;
        float out[8];
        for (; j + 2 <= j1; j += 2) {
          ahead.step();
          const float *b[2] = {base[i0] + (j - sh) * stride,
                               base[i0] + (j + 1 - sh) * stride};
          dotGrid<4, 2>(a + i0, b, n, out);
          for (int h = 0; h < 4; ++h) {
            s[(i0 + h) * ld + j] = out[h * 2];
            s[(i0 + h) * ld + j + 1] = out[h * 2 + 1];
          }
        }
        for (; j < j1; ++j) {
          const float *b[1] = {base[i0] + (j - sh) * stride};
          dotGrid<4, 1>(a + i0, b, n, out);
          for (int h = 0; h < 4; ++h)
            s[(i0 + h) * ld + j] = out[h];
        }
      } else {
        for (int64_t j = j0; j < j1; j += 2)
          ahead.step();
        for (int64_t h = i0; h < i0 + 4; ++h)
          for (int64_t j = j0; j < j1; ++j)
            s[h * ld + j] = dot(a[h], base[h] + (j - sh) * stride, n);
      }
    }
    block.need(i0, nh);
    for (; i0 < nh; ++i0)
      for (int64_t j = j0; j < j1; ++j)
        s[i0 * ld + j] = dot(a[i0], base[i0] + (j - sh) * stride, n);
  }
}

/// y[c] += a * x[c].
inline void axpy(float a, const float *x, float *y, int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    y[c] += a * x[c];
}

/// out[i * ldo + c] += Σ_{j in [j0, j1)} p[i * ldp + j] * rows[i][j *
/// stride + c] for heads [i0, i1) and columns [c0, c1), one element at a
/// time: what the register-blocked loops leave over, with their arithmetic
/// (one FMA chain per element over j in order).
void elementSums(const float *p, int64_t ldp, const float *const *rows,
                 int64_t stride, int64_t j0, int64_t j1, int64_t i0, int64_t i1,
                 int64_t c0, int64_t c1, float *out, int64_t ldo) {
  for (int64_t i = i0; i < i1; ++i)
    for (int64_t c = c0; c < c1; ++c) {
      float acc = out[i * ldo + c];
      for (int64_t j = j0; j < j1; ++j)
        acc += p[i * ldp + j] * rows[i][j * stride + c];
      out[i * ldo + c] = acc;
    }
}

/// weightedSums' AVX2 block of 4 heads sharing their rows x 16 columns
/// from c over rows [j0, j1) (w: the first head's weights, o: its output),
/// the rows those of a narrow cache read in place (rowBytes apart) and
/// widened in registers: the same FMAs in the same order as on their
/// widened copy.
template <KVType Type>
void weightedSums4Narrow(const float *w, int64_t ldp, const char *rows,
                         int64_t rowBytes, float scale, int64_t j0, int64_t j1,
                         int64_t c, float *o, int64_t ldo) {
  typedef float v8 __attribute__((vector_size(32), aligned(4)));
  v8 acc[4][2];
  for (int h = 0; h < 4; ++h)
    for (int v = 0; v < 2; ++v)
      std::memcpy(&acc[h][v], o + h * ldo + c + v * 8, sizeof(v8));
  for (int64_t j = j0; j < j1; ++j) {
    const char *row = rows + j * rowBytes;
    v8 x[2] = {reinterpret_cast<v8>(widen8(row, Type, c, scale)),
               reinterpret_cast<v8>(widen8(row, Type, c + 8, scale))};
    for (int h = 0; h < 4; ++h) {
      v8 a;
      for (int l = 0; l < 8; ++l)
        a[l] = w[h * ldp + j];
      acc[h][0] += a * x[0];
      acc[h][1] += a * x[1];
    }
  }
  for (int h = 0; h < 4; ++h)
    for (int v = 0; v < 2; ++v)
      std::memcpy(o + h * ldo + c + v * 8, &acc[h][v], sizeof(v8));
}

/// out[i][c] += sum over j in [0, len) of p[i * ldp + j] * (row j of head
/// i of t)[c] for heads i < nh and c < n: the same FMAs, in the same order
/// of j, as an axpy per (i, j), but register-blocked (4 heads x 16 columns
/// of accumulators; a row shared by the 4 heads is loaded once) over blocks
/// of 64 rows, so that a block's rows are read from L1/L2 by every head
/// instead of streaming once per head.
void weightedSums(const float *p, int64_t ldp, const RowTable &t, int64_t len,
                  int64_t nh, int64_t n, float *out, int64_t ldo,
                  const int64_t *lens = nullptr) {
  typedef float v8 __attribute__((vector_size(32), aligned(4)));
  const bool wide = hasAvx512();
  const int64_t kRowBlock =
      !wide && F32Block::copies(t.type, F32Block::longestRun(t, nh))
          ? rowBlockL2(n)
          : rowBlock(n);
  ThreadScratch::Scope scope;
  F32Block block(scope, t, nh, n, kRowBlock);
  const bool direct = directNarrow(t, nh);
  const bool direct2 = directNarrowAvx2(t, nh, n);
  RowPrefetch ahead;
  const float *const *rows = nullptr;
  int64_t stride = 0, sh = 0;
  auto block4 = [&](int64_t i0, int64_t c, int64_t j0, int64_t j1,
                    auto sharedTag) __attribute__((always_inline)) {
    constexpr bool shared = decltype(sharedTag)::value;
    constexpr int kRows = shared ? 1 : 4;
    // Once per call, not per row: a few lines of the next block.
    ahead.step();
    v8 acc[4][2];
    for (int h = 0; h < 4; ++h)
      for (int v = 0; v < 2; ++v)
        std::memcpy(&acc[h][v], out + (i0 + h) * ldo + c + v * 8, sizeof(v8));
    const float *at[kRows];
    for (int h = 0; h < kRows; ++h)
      at[h] = rows[i0 + h] + (j0 - sh) * stride + c;
    const float *w = p + i0 * ldp;
    for (int64_t j = j0; j < j1; ++j) {
      v8 x[kRows][2];
      for (int h = 0; h < kRows; ++h) {
        std::memcpy(&x[h][0], at[h], sizeof(v8));
        std::memcpy(&x[h][1], at[h] + 8, sizeof(v8));
        at[h] += stride;
      }
      for (int h = 0; h < 4; ++h) {
        v8 a;
        for (int l = 0; l < 8; ++l)
          a[l] = w[h * ldp + j];
        acc[h][0] += a * x[shared ? 0 : h][0];
        acc[h][1] += a * x[shared ? 0 : h][1];
      }
    }
    for (int h = 0; h < 4; ++h)
      for (int v = 0; v < 2; ++v)
        std::memcpy(out + (i0 + h) * ldo + c + v * 8, &acc[h][v], sizeof(v8));
  };
  for (int64_t j0 = 0; j0 < len; j0 += kRowBlock) {
    const int64_t j1 = std::min(len, j0 + kRowBlock);
    ahead = RowPrefetch(t, nh, n, j1, std::min(len, j1 + kRowBlock));
    ahead.spread((n / 16) * (nh / 4));
    block.load(t, nh, n, j0, j1);
    rows = block.rows();
    stride = block.stride;
    sh = block.shift;
    // Rows and weights of this block from row index j0 - sh on.
    const float *pb = p + sh;
    if (direct2) {
      // AVX2, the narrow rows read in place, widened in registers: block4's
      // arithmetic on their widened copy.
      withNarrowType(t.type, [&](auto type) {
        for (int64_t c = 0; c < n; c += 16)
          for (int64_t i0 = 0; i0 < nh; i0 += 4) {
            ahead.step();
            weightedSums4Narrow<decltype(type)::value>(
                p + i0 * ldp, ldp, static_cast<const char *>(t.base[i0]),
                t.stride * kvTypeSize(t.type), t.scale, j0, j1, c,
                out + i0 * ldo, ldo);
          }
      });
      continue;
    }
    if (!wide)
      block.need(0, nh);
    int64_t c = 0;
    if (wide) {
      // AVX-512: 4 heads x 64 columns of accumulators, the same FMA chains.
      const int64_t calls = (n / 64) * (nh / 4);
      if (calls > 0)
        ahead.spread(calls);
      // Heads outer: a group's (widened) rows are read for every column
      // while they are in L1. Each (head, column) chain is the same.
      for (int64_t i0 = 0; i0 + 4 <= nh; i0 += 4) {
        if (direct && sameRows4(t.base, i0)) {
          // The narrow rows read in place, widened in registers.
          for (int64_t cc = 0; cc + 64 <= n; cc += 64) {
            ahead.step();
            avx512::weightedSums4x64(p + i0 * ldp, ldp, t.base[i0], t.type,
                                     t.scale, t.stride, j0, j1, cc,
                                     out + i0 * ldo, ldo);
          }
          continue;
        }
        // Rows past every head's own end have zero weights: nothing to add.
        const int64_t end = std::min(j1, rowsNeeded(lens, i0, i0 + 4, len));
        if (end <= j0) {
          for (int64_t cc = 0; cc + 64 <= n; cc += 64)
            ahead.step();
          continue;
        }
        block.need(i0, i0 + 4);
        for (int64_t cc = 0; cc + 64 <= n; cc += 64) {
          ahead.step();
          avx512::weightedSums4x64(pb + i0 * ldp, ldp, rows + i0,
                                   sameRows4(rows, i0), stride, j0 - sh,
                                   end - sh, cc, out + i0 * ldo, ldo);
        }
      }
      c = n / 64 * 64;
      block.need(nh / 4 * 4, nh);
      if (c < n)
        block.need(0, nh); // the columns left over, every head
      // The heads left over in those columns.
      elementSums(pb, ldp, rows, stride, j0 - sh, j1 - sh, nh / 4 * 4, nh, 0, c,
                  out, ldo);
    }
    for (; c + 16 <= n; c += 16) {
      int64_t i0 = 0;
      for (; i0 + 4 <= nh; i0 += 4) {
        if (sameRows4(rows, i0))
          block4(i0, c, j0, j1, std::true_type());
        else
          block4(i0, c, j0, j1, std::false_type());
      }
      // The heads left over in these 16 columns.
      elementSums(pb, ldp, rows, stride, j0 - sh, j1 - sh, i0, nh, c, c + 16,
                  out, ldo);
    }
    // The columns left over, every head.
    elementSums(pb, ldp, rows, stride, j0 - sh, j1 - sh, 0, nh, c, n, out, ldo);
  }
}

/// Scales scores[0, n) (scores[j] = float(scores[j] * scale), in double;
/// none when scale is 1), replaces them by exp(score - max) and returns
/// their sum, in double as the interpreter sums it, over 8 partial sums
/// (lane i takes j = i mod 8) added pairwise: one sequential double add
/// per score cost as much as all of a prefill's dot products; this order
/// vectorizes and is the same for every row, batch and thread count.
double softmaxWeights(float *scores, int64_t n, double scale = 1.0) {
  static const bool wide = hasAvx512();
  if (wide)
    return avx512::softmaxWeights(scores, n, scale);
  if (scale != 1.0)
    for (int64_t j = 0; j < n; ++j)
      scores[j] = static_cast<float>(scores[j] * scale);
  constexpr int kLanes = 8;
  // The maximum over 8 lanes (a maximum is exact in any order; one
  // sequential compare a score took half of prefill's time outside the
  // dot products).
  float lane[kLanes];
  for (int i = 0; i < kLanes; ++i)
    lane[i] = scores[0];
  int64_t at = 0;
  for (; at + kLanes <= n; at += kLanes)
    for (int i = 0; i < kLanes; ++i)
      lane[i] = scores[at + i] > lane[i] ? scores[at + i] : lane[i];
  float mx = lane[0];
  for (int i = 1; i < kLanes; ++i)
    mx = std::max(mx, lane[i]);
  for (; at < n; ++at)
    mx = std::max(mx, scores[at]);
  for (int64_t j = 0; j < n; ++j)
    scores[j] = expApprox(scores[j] - mx);
  double part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int i = 0; i < kLanes; ++i)
      part[i] += scores[j + i];
  for (int i = 0; j < n; ++j, ++i)
    part[i] += scores[j];
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int i = 0; i < w; ++i)
      part[i] += part[i + w];
  return part[0];
}

/// Scratch bytes dotTable takes for nh heads of n columns, `distinct` of
/// them with rows of their own.
uint64_t dotTableBytes(int64_t nh, int64_t n, int64_t distinct, int64_t longest,
                       KVType type) {
  uint64_t packed =
      hasAvx512()
          ? scratchRound(4 * static_cast<uint64_t>(
                                 (nh / 4) * avx512::packedQueriesSize(n)))
          : 0;
  return packed + F32Block::bytes(nh, n, rowBlock(n), distinct, longest, type);
}

/// Scratch bytes weightedSums takes (the same table sizes).
uint64_t weightedSumsBytes(int64_t nh, int64_t n, int64_t distinct,
                           int64_t longest, KVType type) {
  const int64_t rows = !hasAvx512() && F32Block::copies(type, longest)
                           ? rowBlockL2(n)
                           : rowBlock(n);
  return F32Block::bytes(nh, n, rows, distinct, longest, type);
}

/// The longest run of query rows one attention item holds: prefill rows
/// of one slot at consecutive positions share every key and value row, so
/// a run of R rows reads each of them once for R x group (query row, head)
/// entries. Long runs make prefill compute-bound instead of bound by L3
/// reading the cache once per run (8 rows: 16 FLOP per byte); the item's
/// scores (R x group rows of up to maxLen floats, written once and read
/// twice) are kept within kRunScoreBytes.
constexpr int64_t kMaxQueryRun = 32;
constexpr int64_t kRunScoreBytes = 2 << 20;
int64_t queryRun(int64_t group, int64_t maxLen) {
  return std::clamp<int64_t>(kRunScoreBytes /
                                 (4 * std::max<int64_t>(group * maxLen, 1)),
                             1, kMaxQueryRun);
}

/// Multiply-adds below which a loop runs on the calling thread alone, and
/// the multiply-adds each parallel chunk should hold at least.
constexpr double kMinParallelWork = 1 << 17;
constexpr double kChunkWork = 1 << 15;

/// Runs body over [0, items), on `pool` when it is given and `work` (in
/// multiply-adds) is large enough.
void forItems(ThreadPool *pool, int64_t items, double work,
              const std::function<void(int64_t, int64_t)> &body) {
  if (items <= 0)
    return;
  if (!pool || pool->numWorkers() == 0 || work < kMinParallelWork) {
    body(0, items);
    return;
  }
  int64_t width = pool->numWorkers() + 1;
  int64_t grain =
      static_cast<int64_t>(std::ceil(items * kChunkWork / std::max(work, 1.0)));
  // Several chunks per thread, so that uneven items (prefill) balance.
  grain =
      std::clamp<int64_t>(grain, 1, std::max<int64_t>(1, items / (4 * width)));
  pool->parallelFor(items, grain, body);
}

/// The first key row a query at `pos` attends to.
inline int64_t firstRow(int64_t pos, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
}

/// Blocks of heads per row for the work split: a row's heads in one item
/// when there are rows enough for the threads, else `units` split in up to
/// `blocks` parts (so that batch-1 decode still uses every thread). Each
/// head's arithmetic is the same in any block.
int64_t headBlocks(ThreadPool *pool, int64_t rows, int64_t units) {
  if (!pool || pool->numWorkers() == 0)
    return 1;
  int64_t width = pool->numWorkers() + 1;
  return std::clamp<int64_t>((2 * width + rows - 1) / rows, 1, units);
}

} // namespace

void widenRow(const void *src, KVType type, int64_t n, float *dst,
              float scale) {
  if (type == KVType::F32) {
    std::memcpy(dst, src, sizeof(float) * n);
    return;
  }
  static const bool wide = hasAvx512();
  if (type == KVType::F8E4M3) {
    const auto *b = static_cast<const uint8_t *>(src);
    if (wide) {
      avx512::widenRowE4M3(b, n, scale, dst);
      return;
    }
    // As the AVX-512 loop: the f16 of value * 2^-8, then times 2^8 scale.
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
      _mm256_storeu_ps(dst + c, widen8(b, type, c, scale));
    for (; c < n; ++c)
      dst[c] = ::ds::f8e4m3ToFloat(b[c]) * scale;
    return;
  }
  const auto *x = static_cast<const uint16_t *>(src);
  if (wide) {
    avx512::widenRow(x, type == KVType::BF16, n, dst);
    return;
  }
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(dst + c, widen8(x, type, c, scale));
  if (type == KVType::BF16) {
    for (; c < n; ++c)
      dst[c] = ::ds::bf16ToFloat(x[c]);
    return;
  }
  for (; c < n; ++c)
    dst[c] = ::ds::halfToFloat(x[c]);
}

ThreadScratchNeed attentionScratch(int64_t batch, int64_t seq, int64_t heads,
                                   int64_t d, KVType kvType, int64_t maxLen,
                                   int64_t kvHeads, int64_t dv,
                                   int64_t window) {
  kvHeads = std::max<int64_t>(kvHeads, 1);
  const int64_t group = heads / kvHeads, rows = batch * seq;
  // An item's scratch for ni (query row, head) entries over `distinct` KV
  // heads, `longest` of them sharing a KV head, keys up to the cache's
  // length.
  auto itemBytes = [&](int64_t ni, int64_t distinct, int64_t longest) {
    return scratchRound(4 * static_cast<uint64_t>(ni * (maxLen + dv))) +
           4 * scratchRound(8 * static_cast<uint64_t>(ni)) +
           std::max(dotTableBytes(ni, d, distinct, longest, kvType),
                    weightedSumsBytes(ni, dv, distinct, longest, kvType));
  };
  // The largest item: a decode row with every KV head, or a prefill run
  // of rows (one alone with a sliding window) with one KV head.
  const int64_t run = window > 0 ? 1 : std::min(queryRun(group, maxLen), seq);
  const uint64_t item = seq == 1 ? itemBytes(heads, kvHeads, group)
                                 : itemBytes(run * group, 1, run * group);
  return {scratchRound(8 * static_cast<uint64_t>(rows + 1)) + item, item};
}

// Every item is a run of query rows and a block of KV heads with all of
// their query heads: each key and value row is read once for all of them
// (GQA's group shares it; prefill rows of one sequence at consecutive
// positions share every key row up to the first one's position) instead of
// once per query head and row. Decode items are a row with its KV heads;
// prefill items a run of up to queryRun() rows with one KV head, whose
// (row, head) entries go through the blocked loops 8 at a time. A row of
// the run that ends earlier than the last computes no score past its own
// position (up to the rest of its group of entries) and adds no value row
// past it; scores it computes there get zero weights and are not added
// either: every (row, head) keeps the arithmetic of the plain per-head
// loop, so a prefill row is bit for bit the same row decoded alone.
void attention(const float *q, int64_t batch, int64_t seq, int64_t heads,
               int64_t d, const void *k, const void *v, KVType kvType,
               int64_t maxLen, int64_t kvHeads, int64_t dv,
               const int64_t *slots, const int64_t *positions, int64_t window,
               double scale, float *out, ThreadPool *pool, float kScale,
               float vScale) {
  kvHeads = std::max<int64_t>(kvHeads, 1);
  int64_t group = heads / kvHeads;
  int64_t kStride = kvHeads * d, vStride = kvHeads * dv;
  const int64_t size = kvTypeSize(kvType);
  const int64_t rows = batch * seq;
  double keys = 0;
  for (int64_t i = 0; i < rows; ++i)
    keys +=
        static_cast<double>(positions[i] - firstRow(positions[i], window) + 1);
  double work = keys * heads * static_cast<double>(d + dv);
  // Runs of up to queryRun() rows of one sequence at consecutive positions
  // (without a sliding window, so that they start at the same key row).
  ThreadScratch::Scope scope;
  int64_t *runs = scope.array<int64_t>(rows + 1);
  int64_t numRuns = 0;
  const int64_t maxRun = queryRun(group, maxLen);
  for (int64_t r = 0; r < rows;) {
    int64_t e = r + 1;
    if (window <= 0 && positions[r] >= 0)
      while (e < rows && e - r < maxRun && e / seq == r / seq &&
             positions[e] == positions[e - 1] + 1)
        ++e;
    runs[numRuns++] = r;
    r = e;
  }
  runs[numRuns] = rows;
  // Decode rows: a row's KV heads in one item (or split for the threads).
  // Prefill (runs of rows): one KV head per item, so that the key and value
  // rows it reads in a block stay in L1 for every entry.
  const int64_t blocks = seq > 1 ? kvHeads : headBlocks(pool, numRuns, kvHeads);
  const int64_t perBlock = (kvHeads + blocks - 1) / blocks;

  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      int64_t run = item / blocks, blk = item % blocks;
      int64_t r0 = runs[run], nr = runs[run + 1] - r0;
      int64_t kv0 = blk * perBlock, kv1 = std::min(kvHeads, kv0 + perBlock);
      if (kv0 >= kv1)
        continue;
      // Entry i: KV head kv0 + i / (nr * group), row r0 + (i / group) % nr,
      // query head i % group of that KV head's group.
      const int64_t per = nr * group, ni = (kv1 - kv0) * per;
      auto rowOf = [&](int64_t i) { return r0 + (i / group) % nr; };
      auto headOf = [&](int64_t i) {
        return (kv0 + i / per) * group + i % group;
      };
      int64_t first = firstRow(positions[r0], window);
      int64_t len = positions[r0 + nr - 1] - first + 1; // the longest
      if (len <= 0) { // an invalid position: nothing to attend to
        for (int64_t i = 0; i < ni; ++i) {
          float *o = out + (rowOf(i) * heads + headOf(i)) * dv;
          std::fill(o, o + dv, 0.0f);
        }
        continue;
      }
      // Taken as attentionScratch counts them.
      ThreadScratch::Scope itemScope;
      float *scores = itemScope.array<float>(ni * (len + dv));
      float *acc = scores + ni * len;
      const float **qs = itemScope.array<const float *>(ni);
      const void **ks = itemScope.array<const void *>(ni);
      int64_t *lens = itemScope.array<int64_t>(ni);
      double *sums = itemScope.array<double>(ni);
      int64_t slot = slots[r0 / seq];
      const char *kRows = static_cast<const char *>(k) +
                          (slot * maxLen + first) * kStride * size;
      const char *vRows = static_cast<const char *>(v) +
                          (slot * maxLen + first) * vStride * size;
      for (int64_t i = 0; i < ni; ++i) {
        qs[i] = q + (rowOf(i) * heads + headOf(i)) * d;
        ks[i] = kRows + (kv0 + i / per) * d * size;
        lens[i] = positions[rowOf(i)] - first + 1;
      }
      dotTable(qs, RowTable{ks, kStride, kvType, kScale}, d, ni, len, scores,
               len, lens);
      std::fill(acc, acc + ni * dv, 0.0f);
      for (int64_t i = 0; i < ni; ++i) {
        sums[i] = softmaxWeights(scores + i * len, lens[i], scale);
        std::fill(scores + i * len + lens[i], scores + (i + 1) * len, 0.0f);
      }
      for (int64_t i = 0; i < ni; ++i)
        ks[i] = vRows + (kv0 + i / per) * dv * size;
      weightedSums(scores, len, RowTable{ks, vStride, kvType, vScale}, len, ni,
                   dv, acc, dv, lens);
      for (int64_t i = 0; i < ni; ++i) {
        float inv = static_cast<float>(1.0 / sums[i]);
        float *o = out + (rowOf(i) * heads + headOf(i)) * dv;
        for (int64_t c = 0; c < dv; ++c)
          o[c] = acc[i * dv + c] * inv;
      }
    }
  };
  forItems(pool, numRuns * blocks, work, body);
}

void mlaAttention(const float *qNope, const float *qPe, int64_t batch,
                  int64_t seq, int64_t heads, int64_t dn, int64_t dr,
                  const float *cKv, const float *kPe, int64_t maxLen,
                  int64_t rank, const float *kvB, int64_t dv,
                  const int64_t *slots, const int64_t *positions, double scale,
                  float *out, ThreadPool *pool) {
  double keys = 0;
  for (int64_t i = 0; i < batch * seq; ++i)
    keys += static_cast<double>(positions[i] + 1);
  double work = keys * heads * static_cast<double>(2 * rank + dr) +
                static_cast<double>(batch * seq * heads) * (dn + dv) * rank;

  auto body = [&](int64_t begin, int64_t end) {
    ThreadScratch::Scope scope;
    float *scores = scope.array<float>(maxLen + 2 * rank);
    float *qAbs = scores + maxLen, *oLat = qAbs + rank;
    for (int64_t item = begin; item < end; ++item) {
      int64_t h = item % heads, bs = item / heads, b = bs / seq;
      int64_t pos = positions[bs], len = pos + 1;
      float *o = out + item * dv;
      if (len <= 0) { // an invalid position: nothing to attend to
        std::fill(o, o + dv, 0.0f);
        continue;
      }
      const float *wUk = kvB + h * (dn + dv) * rank, *wUv = wUk + dn * rank;
      const float *qn = qNope + item * dn, *qp = qPe + item * dr;
      // q_abs = W_ukᵀ q_nope: the query in latent space.
      std::fill(qAbs, qAbs + rank, 0.0f);
      for (int64_t i = 0; i < dn; ++i)
        axpy(qn[i], wUk + i * rank, qAbs, rank);
      const float *lat = cKv + slots[b] * maxLen * rank;
      const float *pe = kPe + slots[b] * maxLen * dr;
      for (int64_t j = 0; j < len; ++j)
        scores[j] = static_cast<float>(
            (dot(qAbs, lat + j * rank, rank) + dot(qp, pe + j * dr, dr)) *
            scale);
      double sum = softmaxWeights(scores, len);
      // o_lat = Σ p_j c_kv[j], then out = W_uv o_lat / Σ p_j.
      std::fill(oLat, oLat + rank, 0.0f);
      for (int64_t j = 0; j < len; ++j)
        axpy(scores[j], lat + j * rank, oLat, rank);
      float inv = static_cast<float>(1.0 / sum);
      for (int64_t c = 0; c < dv; ++c)
        o[c] = dot(wUv + c * rank, oLat, rank) * inv;
    }
  };
  forItems(pool, batch * seq * heads, work, body);
}

int64_t mlaScratchFloats(int64_t rows, int64_t heads, int64_t rank, int64_t dn,
                         bool scaledQueries) {
  return 2 * rows * heads * rank + (scaledQueries ? rows * heads * dn : 0);
}

ThreadScratchNeed mlaAttentionScratch(int64_t batch, int64_t seq, int64_t heads,
                                      int64_t dn, int64_t dr, KVType cacheType,
                                      int64_t maxLen, int64_t rank,
                                      WeightFormat ukFormat,
                                      WeightFormat uvFormat) {
  // The largest item: one row with every head, keys up to the cache's
  // length; all heads read the same latent rows.
  const uint64_t item =
      2 * scratchRound(4 * static_cast<uint64_t>(heads * maxLen)) +
      3 * scratchRound(8 * static_cast<uint64_t>(heads)) +
      std::max({dotTableBytes(heads, rank, 1, heads, cacheType),
                dotTableBytes(heads, dr, 1, heads, cacheType),
                weightedSumsBytes(heads, rank, 1, heads, cacheType)});
  ThreadScratchNeed need = ThreadScratchNeed::everywhere(item);
  need.atLeast(gemmScratch(batch * seq, dn, ukFormat));
  need.atLeast(gemmScratch(batch * seq, rank, uvFormat));
  return need;
}

void mlaAttentionPacked(const float *qNope, const float *qPe, int64_t batch,
                        int64_t seq, int64_t heads, int64_t dn, int64_t dr,
                        const void *cKv, const void *kPe, KVType cacheType,
                        int64_t maxLen, int64_t rank, const PackedWeight *ukT,
                        const PackedWeight *uv, int64_t dv,
                        const int64_t *slots, const int64_t *positions,
                        double scale, float *out, ThreadPool *pool,
                        const float *ukScales, float *scratch, float cKvScale,
                        float kPeScale) {
  const int64_t size = kvTypeSize(cacheType);
  const int64_t rows = batch * seq;
  // The executor plans this in its arena; called directly, the calling
  // thread's scratch.
  ThreadScratch::Scope scope;
  if (!scratch)
    scratch = scope.array<float>(
        mlaScratchFloats(rows, heads, rank, dn, ukScales != nullptr));
  float *qAbsBuf = scratch, *oLatBuf = scratch + rows * heads * rank;
  // An int8 W_ukᵀ has kv_b's row scales along K: fold them into the
  // queries.
  if (ukScales) {
    float *qScaled = oLatBuf + rows * heads * rank;
    for (int64_t r = 0; r < rows * heads; ++r)
      for (int64_t i = 0; i < dn; ++i)
        qScaled[r * dn + i] =
            qNope[r * dn + i] * ukScales[(r % heads) * dn + i];
    qNope = qScaled;
  }
  // q_abs[row, h] = W_ukᵀ q_nope[row, h]: one GEMM per head over all rows.
  for (int64_t h = 0; h < heads; ++h)
    gemm(qNope + h * dn, rows, heads * dn, ukT[h], nullptr, qAbsBuf + h * rank,
         heads * rank, pool);
  double keys = 0;
  for (int64_t i = 0; i < rows; ++i)
    keys += static_cast<double>(positions[i] + 1);
  double work = keys * heads * static_cast<double>(2 * rank + dr);
  float *qa = qAbsBuf, *ol = oLatBuf;
  // Items are a row and a block of its heads: each latent row is read once
  // for the block (every head attends to the same latents) and its dot
  // products run four heads at a time.
  const int64_t blocks = headBlocks(pool, rows, heads);
  const int64_t perBlock = (heads + blocks - 1) / blocks;
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      int64_t bs = item / blocks, blk = item % blocks, b = bs / seq;
      int64_t h0 = blk * perBlock, nh = std::min(heads, h0 + perBlock) - h0;
      if (nh <= 0)
        continue;
      int64_t len = positions[bs] + 1;
      float *o = ol + (bs * heads + h0) * rank;
      if (len <= 0) { // an invalid position: nothing to attend to
        std::fill(o, o + nh * rank, 0.0f);
        continue;
      }
      const float *q = qa + (bs * heads + h0) * rank;
      const float *qp = qPe + (bs * heads + h0) * dr;
      const char *lat =
          static_cast<const char *>(cKv) + slots[b] * maxLen * rank * size;
      const char *pe =
          static_cast<const char *>(kPe) + slots[b] * maxLen * dr * size;
      // Taken as mlaAttentionScratch counts them.
      ThreadScratch::Scope itemScope;
      float *scores = itemScope.array<float>(nh * len);
      float *part = itemScope.array<float>(nh * len);
      const float **qs = itemScope.array<const float *>(nh);
      const float **qps = itemScope.array<const float *>(nh);
      const void **lats = itemScope.array<const void *>(nh);
      for (int64_t i = 0; i < nh; ++i)
        qs[i] = q + i * rank;
      std::fill(lats, lats + nh, lat);
      dotTable(qs, RowTable{lats, rank, cacheType, cKvScale}, rank, nh, len,
               scores, len);
      for (int64_t i = 0; i < nh; ++i)
        qps[i] = qp + i * dr;
      std::fill(lats, lats + nh, pe);
      dotTable(qps, RowTable{lats, dr, cacheType, kPeScale}, dr, nh, len, part,
               len);
      for (int64_t i = 0; i < nh * len; ++i)
        scores[i] = static_cast<float>((scores[i] + part[i]) * scale);
      for (int64_t i = 0; i < nh; ++i) {
        float inv =
            static_cast<float>(1.0 / softmaxWeights(&scores[i * len], len));
        for (int64_t j = 0; j < len; ++j)
          scores[i * len + j] *= inv;
      }
      std::fill(o, o + nh * rank, 0.0f);
      std::fill(lats, lats + nh, lat);
      weightedSums(scores, len, RowTable{lats, rank, cacheType, cKvScale}, len,
                   nh, rank, o, rank);
    }
  };
  forItems(pool, rows * blocks, work, body);
  // out[row, h] = W_uv o_lat[row, h].
  for (int64_t h = 0; h < heads; ++h)
    gemm(oLatBuf + h * rank, rows, heads * rank, uv[h], nullptr, out + h * dv,
         heads * dv, pool);
}

} // namespace ds::rt::kernels
