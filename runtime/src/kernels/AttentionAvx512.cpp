//===- AttentionAvx512.cpp - attention's inner loops for AVX-512 ----------===//
//
// Compiled with the ISA's flags and -ffp-contract=off (every multiply-add
// below is an explicit FMA); Attention.cpp calls it only when the CPU has
// AVX-512. See AttentionBlocks.h for the arithmetic both builds share.
//
//===----------------------------------------------------------------------===//

#include "AttentionBlocks.h"

#include <cmath>
#include <immintrin.h>
#include <type_traits>

namespace ds::rt::kernels::avx512 {
namespace {

/// Elements of a row as the loops read them: f32 in place, or a bf16 / f16
/// cache's rows widened exactly in registers (Narrow: KVType).
template <KVType Type>
using Elem = std::conditional_t<Type == KVType::F32, float, uint16_t>;

template <KVType Type> inline __m256 load8(const Elem<Type> *p) {
  if constexpr (Type == KVType::F32) {
    return _mm256_loadu_ps(p);
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    if constexpr (Type == KVType::BF16)
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else
      return _mm256_cvtph_ps(h);
  }
}

template <KVType Type> inline __m512 load16(const Elem<Type> *p) {
  if constexpr (Type == KVType::F32) {
    return _mm512_loadu_ps(p);
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
    if constexpr (Type == KVType::BF16)
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  }
}

template <KVType Type> inline float scalar(Elem<Type> x) {
  if constexpr (Type == KVType::F32)
    return x;
  else if constexpr (Type == KVType::BF16)
    return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(x) << 16)));
  else
    return _cvtsh_ss(x);
}

/// dot()'s lane reduction of the 8 lanes at `half` (0: low, 1: high).
inline float reduceHalf(__m512 v, int half) {
  __m256 x = half ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v);
  __m128 four =
      _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}

/// dot()'s finish from 8 lane sums and the elements [c, n) left.
template <KVType Type>
inline float finishDot(const float *lanes, const float *a, const Elem<Type> *b,
                       int64_t c, int64_t n) {
  float part[8];
  for (int i = 0; i < 8; ++i)
    part[i] = lanes[i];
  for (int i = 0; c < n; ++c, ++i)
    part[i] = std::fma(a[c], scalar<Type>(b[c]), part[i]);
  for (int w = 4; w > 0; w /= 2)
    for (int i = 0; i < w; ++i)
      part[i] += part[i + w];
  return part[0];
}

/// dot()'s lane reduction of 16 scores at once: acc[i] holds two scores'
/// 8 lanes each (low half, high half). Returns out[4 q + e] = the score in
/// half q % 2 of acc[2 e + q / 2]. Each score's additions are dot()'s,
/// pairwise: lanes i + 4 (i < 4), then i + 2, then i + 1, done for 16
/// scores with 14 shuffles and 7 adds instead of 64 and 48.
inline __m512 reduce16(const __m512 *acc) {
  __m512 s[4];
  for (int m = 0; m < 4; ++m) {
    // Quarters [x0 x2 y0 y2] + [x1 x3 y1 y3]: lane i + lane i + 4 of each
    // score.
    __m512 x = acc[2 * m], y = acc[2 * m + 1];
    s[m] = _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  __m512 v[2];
  for (int m = 0; m < 2; ++m) {
    // Within each quarter: [a0 a1 b0 b1] + [a2 a3 b2 b3].
    __m512 x = s[2 * m], y = s[2 * m + 1];
    v[m] = _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // [a0 b0 c0 d0] + [a1 b1 c1 d1].
  return _mm512_add_ps(_mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(v[0], v[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

/// K rows at once against the 4 heads, whose queries are interleaved in
/// pairs (`q[pair][c / 8][16]`: 8 elements of head 2 * pair, then the same 8
/// of head 2 * pair + 1): 2 x K accumulators, each two heads' 8 lanes.
template <int K, KVType Type>
inline void dotBlock(const float *q, const float *const *a, const Elem<Type> *b,
                     int64_t stride, int64_t n, int64_t j, float *s,
                     int64_t ld) {
  __m512 sum[2][K];
  for (int p = 0; p < 2; ++p)
    for (int r = 0; r < K; ++r)
      sum[p][r] = _mm512_setzero_ps();
  const int64_t full = n / 8 * 8;
  for (int64_t c = 0; c < full; c += 8) {
    __m512 x0 = _mm512_loadu_ps(q + 2 * c);
    __m512 x1 = _mm512_loadu_ps(q + 2 * full + 2 * c);
    for (int r = 0; r < K; ++r) {
      __m512 y = _mm512_broadcast_f32x8(load8<Type>(b + (j + r) * stride + c));
      sum[0][r] = _mm512_fmadd_ps(x0, y, sum[0][r]);
      sum[1][r] = _mm512_fmadd_ps(x1, y, sum[1][r]);
    }
  }
  if (full == n && K % 4 == 0) {
    // Eight accumulators (16 scores) a tree: rows r .. r + 3 of both pairs.
    for (int r0 = 0; r0 < K; r0 += 4) {
      __m512 acc[8];
      for (int i = 0; i < 8; ++i)
        acc[i] = sum[i / 4][r0 + i % 4];
      alignas(64) float out[16];
      _mm512_store_ps(out, reduce16(acc));
      for (int q = 0; q < 4; ++q)
        for (int e = 0; e < 4; ++e) {
          const int i = 2 * e + q / 2; // acc[i]: pair i / 4, row r0 + i % 4
          s[(2 * (i / 4) + q % 2) * ld + j + r0 + i % 4] = out[4 * q + e];
        }
    }
    return;
  }
  for (int p = 0; p < 2; ++p)
    for (int r = 0; r < K; ++r)
      for (int half = 0; half < 2; ++half) {
        const int h = 2 * p + half;
        float *dst = s + h * ld + j + r;
        if (full == n) {
          *dst = reduceHalf(sum[p][r], half);
        } else {
          alignas(64) float lanes[16];
          _mm512_store_ps(lanes, sum[p][r]);
          *dst = finishDot<Type>(lanes + 8 * half, a[h], b + (j + r) * stride,
                                 full, n);
        }
      }
}

} // namespace

void widenRow(const uint16_t *src, bool bf16, int64_t n, float *dst) {
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(src + c));
    _mm512_storeu_ps(dst + c, bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                         _mm512_cvtepu16_epi32(h), 16))
                                   : _mm512_cvtph_ps(h));
  }
  if (c < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - c)) - 1);
    __m256i h = _mm256_maskz_loadu_epi16(m, src + c);
    _mm512_mask_storeu_ps(dst + c, m,
                          bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                     _mm512_cvtepu16_epi32(h), 16))
                               : _mm512_cvtph_ps(h));
  }
}

void packQueries4(const float *const *a, int64_t n, float *q) {
  const int64_t full = n / 8 * 8;
  for (int p = 0; p < 2; ++p)
    for (int64_t c = 0; c < full; c += 8)
      for (int half = 0; half < 2; ++half)
        for (int i = 0; i < 8; ++i)
          q[p * 2 * full + 2 * c + 8 * half + i] = a[2 * p + half][c + i];
}

namespace {

template <KVType Type>
void dotRows4T(const float *q, const float *const *a, const Elem<Type> *b,
               int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
               int64_t ld) {
  int64_t j = j0;
  for (; j + 8 <= j1; j += 8)
    dotBlock<8, Type>(q, a, b, stride, n, j, s, ld);
  for (; j + 4 <= j1; j += 4)
    dotBlock<4, Type>(q, a, b, stride, n, j, s, ld);
  for (; j < j1; ++j)
    dotBlock<1, Type>(q, a, b, stride, n, j, s, ld);
}

template <KVType Type>
void weightedSums4x64T(const float *p, int64_t ldp,
                       const Elem<Type> *const *rows, bool shared,
                       int64_t stride, int64_t j0, int64_t j1, int64_t c0,
                       float *out, int64_t ldo) {
  __m512 acc[4][4];
  for (int h = 0; h < 4; ++h)
    for (int v = 0; v < 4; ++v)
      acc[h][v] = _mm512_loadu_ps(out + h * ldo + c0 + 16 * v);
  if (shared) {
    const Elem<Type> *row = rows[0] + c0;
    for (int64_t j = j0; j < j1; ++j) {
      __m512 x[4];
      for (int v = 0; v < 4; ++v)
        x[v] = load16<Type>(row + j * stride + 16 * v);
      for (int h = 0; h < 4; ++h) {
        __m512 w = _mm512_set1_ps(p[h * ldp + j]);
        for (int v = 0; v < 4; ++v)
          acc[h][v] = _mm512_fmadd_ps(w, x[v], acc[h][v]);
      }
    }
  } else {
    for (int64_t j = j0; j < j1; ++j)
      for (int h = 0; h < 4; ++h) {
        __m512 w = _mm512_set1_ps(p[h * ldp + j]);
        const Elem<Type> *row = rows[h] + j * stride + c0;
        for (int v = 0; v < 4; ++v)
          acc[h][v] = _mm512_fmadd_ps(w, load16<Type>(row + 16 * v), acc[h][v]);
      }
  }
  for (int h = 0; h < 4; ++h)
    for (int v = 0; v < 4; ++v)
      _mm512_storeu_ps(out + h * ldo + c0 + 16 * v, acc[h][v]);
}

} // namespace

void dotRows4(const float *q, const float *const *a, const float *b,
              int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
              int64_t ld) {
  dotRows4T<KVType::F32>(q, a, b, stride, n, j0, j1, s, ld);
}

void dotRows4(const float *q, const float *const *a, const uint16_t *b,
              KVType type, int64_t stride, int64_t n, int64_t j0, int64_t j1,
              float *s, int64_t ld) {
  if (type == KVType::BF16)
    dotRows4T<KVType::BF16>(q, a, b, stride, n, j0, j1, s, ld);
  else
    dotRows4T<KVType::F16>(q, a, b, stride, n, j0, j1, s, ld);
}

void weightedSums4x64(const float *p, int64_t ldp, const float *const *rows,
                      bool shared, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo) {
  weightedSums4x64T<KVType::F32>(p, ldp, rows, shared, stride, j0, j1, c0, out,
                                 ldo);
}

void weightedSums4x64(const float *p, int64_t ldp, const uint16_t *row,
                      KVType type, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo) {
  const uint16_t *rows[4] = {row, row, row, row};
  if (type == KVType::BF16)
    weightedSums4x64T<KVType::BF16>(p, ldp, rows, true, stride, j0, j1, c0, out,
                                    ldo);
  else
    weightedSums4x64T<KVType::F16>(p, ldp, rows, true, stride, j0, j1, c0, out,
                                   ldo);
}

} // namespace ds::rt::kernels::avx512
