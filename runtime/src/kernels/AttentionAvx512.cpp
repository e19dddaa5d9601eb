//===- AttentionAvx512.cpp - attention's inner loops for AVX-512 ----------===//
//
// Compiled with the ISA's flags and -ffp-contract=off (every multiply-add
// below is an explicit FMA); Attention.cpp calls it only when the CPU has
// AVX-512. See AttentionBlocks.h for the arithmetic both builds share.
//
//===----------------------------------------------------------------------===//

#include "AttentionBlocks.h"
#include "ds/support/DType.h"

#include <algorithm>
#include <cmath>
#include <immintrin.h>
#include <limits>
#include <type_traits>

namespace ds::rt::kernels::avx512 {
namespace {

/// Elements of a row as the loops read them: f32 in place, or a bf16 / f16
/// / e4m3 cache's rows widened exactly in registers (Narrow: KVType). `f`
/// is an e4m3 cache's 2^8 * scale (its f16 widening is value * 2^-8),
/// unused for the other types.
template <KVType Type>
using Elem = std::conditional_t<
    Type == KVType::F32, float,
    std::conditional_t<Type == KVType::F8E4M3, uint8_t, uint16_t>>;

/// e4m3 bytes (sign-extended to 16 bits) -> the f16 bits of value * 2^-8:
/// shifted left 7, the sign lands in bits 15 and 14; bit 14 is cleared.
inline __m128i e4m3ToHalf8(__m128i bytes) {
  return _mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7),
                       _mm_set1_epi16(static_cast<short>(0xbf80)));
}
inline __m256i e4m3ToHalf16(__m128i bytes) {
  return _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7),
                          _mm256_set1_epi16(static_cast<short>(0xbf80)));
}
/// The lanes of e4m3 bytes that are NaN (0x7f, 0xff).
inline __mmask16 e4m3NaN(__m128i bytes) {
  return _mm_cmpeq_epi8_mask(_mm_and_si128(bytes, _mm_set1_epi8(0x7f)),
                             _mm_set1_epi8(0x7f));
}

template <KVType Type> inline __m256 load8(const Elem<Type> *p, float f) {
  if constexpr (Type == KVType::F32) {
    return _mm256_loadu_ps(p);
  } else if constexpr (Type == KVType::F8E4M3) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p));
    __m256 v =
        _mm256_mul_ps(_mm256_cvtph_ps(e4m3ToHalf8(b)), _mm256_set1_ps(f));
    return _mm256_mask_mov_ps(
        v, static_cast<__mmask8>(e4m3NaN(b)),
        _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    if constexpr (Type == KVType::BF16)
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else
      return _mm256_cvtph_ps(h);
  }
}

template <KVType Type> inline __m512 load16(const Elem<Type> *p, float f) {
  if constexpr (Type == KVType::F32) {
    return _mm512_loadu_ps(p);
  } else if constexpr (Type == KVType::F8E4M3) {
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    __m512 v =
        _mm512_mul_ps(_mm512_cvtph_ps(e4m3ToHalf16(b)), _mm512_set1_ps(f));
    return _mm512_mask_mov_ps(
        v, e4m3NaN(b), _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
    if constexpr (Type == KVType::BF16)
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else
      return _mm512_cvtph_ps(h);
  }
}

template <KVType Type> inline float scalar(Elem<Type> x, float f) {
  if constexpr (Type == KVType::F32) {
    return x;
  } else if constexpr (Type == KVType::F8E4M3) {
    return ::ds::f8e4m3ToFloat(x) * (f * 0x1p-8f); // f / 2^8: the scale
  } else if constexpr (Type == KVType::BF16) {
    return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(int(x) << 16)));
  } else {
    return _cvtsh_ss(x);
  }
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
                       int64_t c, int64_t n, float f) {
  float part[8];
  for (int i = 0; i < 8; ++i)
    part[i] = lanes[i];
  for (int i = 0; c < n; ++c, ++i)
    part[i] = std::fma(a[c], scalar<Type>(b[c], f), part[i]);
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

/// K rows at once against 2 P heads, whose queries are interleaved in
/// pairs (`q[pair][c / 8][16]`: 8 elements of head 2 * pair, then the same 8
/// of head 2 * pair + 1): P x K accumulators, each two heads' 8 lanes.
template <int P, int K, KVType Type>
inline void dotBlock(const float *q, const float *const *a, const Elem<Type> *b,
                     int64_t stride, int64_t n, int64_t j, float *s, int64_t ld,
                     float f = 1.0f) {
  __m512 sum[P][K];
  for (int p = 0; p < P; ++p)
    for (int r = 0; r < K; ++r)
      sum[p][r] = _mm512_setzero_ps();
  const int64_t full = n / 8 * 8;
  int64_t c = 0;
  if constexpr (Type == KVType::F8E4M3) {
    // e4m3 rows are widened 16 elements at a time (the widening costs
    // several instructions per vector), each half then broadcast: the
    // same FMAs in the same order as 8 at a time.
    for (; c + 16 <= full; c += 16) {
      __m512 x0[P], x1[P];
      for (int p = 0; p < P; ++p) {
        x0[p] = _mm512_loadu_ps(q + p * 2 * full + 2 * c);
        x1[p] = _mm512_loadu_ps(q + p * 2 * full + 2 * c + 16);
      }
      for (int r = 0; r < K; ++r) {
        __m512 y = load16<Type>(b + (j + r) * stride + c, f);
        __m512 lo = _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(1, 0, 1, 0));
        __m512 hi = _mm512_shuffle_f32x4(y, y, _MM_SHUFFLE(3, 2, 3, 2));
        for (int p = 0; p < P; ++p)
          sum[p][r] = _mm512_fmadd_ps(x0[p], lo, sum[p][r]);
        for (int p = 0; p < P; ++p)
          sum[p][r] = _mm512_fmadd_ps(x1[p], hi, sum[p][r]);
      }
    }
  }
  for (; c < full; c += 8) {
    __m512 x[P];
    for (int p = 0; p < P; ++p)
      x[p] = _mm512_loadu_ps(q + p * 2 * full + 2 * c);
    for (int r = 0; r < K; ++r) {
      __m512 y =
          _mm512_broadcast_f32x8(load8<Type>(b + (j + r) * stride + c, f));
      for (int p = 0; p < P; ++p)
        sum[p][r] = _mm512_fmadd_ps(x[p], y, sum[p][r]);
    }
  }
  constexpr int kTree = K / 4 * 4; // rows reduced 16 scores at a time
  if (full == n && kTree > 0 && P % 2 == 0) {
    // Eight accumulators (16 scores) a tree: rows r0 .. r0 + 3 of pairs
    // p0, p0 + 1, ordered so that quarter h of the result is head 2 p0 + h's
    // 4 scores (acc[2 e + h / 2] holds it for row r0 + e in half h % 2),
    // stored as they are.
    for (int p0 = 0; p0 < P; p0 += 2)
      for (int r0 = 0; r0 < kTree; r0 += 4) {
        __m512 acc[8];
        for (int m = 0; m < 8; ++m)
          acc[m] = sum[p0 + m % 2][r0 + m / 2];
        __m512 out = reduce16(acc);
        float *at = s + 2 * p0 * ld + j + r0;
        _mm_storeu_ps(at, _mm512_castps512_ps128(out));
        _mm_storeu_ps(at + ld, _mm512_extractf32x4_ps(out, 1));
        _mm_storeu_ps(at + 2 * ld, _mm512_extractf32x4_ps(out, 2));
        _mm_storeu_ps(at + 3 * ld, _mm512_extractf32x4_ps(out, 3));
      }
    for (int p = 0; p < P; ++p)
      for (int r = kTree; r < K; ++r)
        for (int half = 0; half < 2; ++half)
          s[(2 * p + half) * ld + j + r] = reduceHalf(sum[p][r], half);
    return;
  }
  for (int p = 0; p < P; ++p)
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
                                 full, n, f);
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

double softmaxWeights(float *scores, int64_t n, double scale) {
  if (n <= 0)
    return 0;
  // The scaling, in double as the scalar loop does it, in the same pass as
  // the maximum.
  const __m512d sd = _mm512_set1_pd(scale);
  auto scaled = [&](__m512 x) {
    __m256 lo = _mm512_cvtpd_ps(
        _mm512_mul_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)), sd));
    __m256 hi = _mm512_cvtpd_ps(
        _mm512_mul_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)), sd));
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
  };
  const bool scaling = scale != 1.0;
  if (scaling)
    scores[0] = static_cast<float>(scores[0] * scale);
  // The maximum: exact in any order, and a NaN is never taken (the scalar
  // loops compare score > max), so 16 lanes give the scalar loop's value.
  __m512 lane = _mm512_set1_ps(scores[0]);
  int64_t at = 0;
  for (; at + 16 <= n; at += 16) {
    __m512 x = _mm512_loadu_ps(scores + at);
    if (scaling && at > 0) {
      x = scaled(x);
      _mm512_storeu_ps(scores + at, x);
    } else if (scaling) { // scores[0] is scaled already
      x = _mm512_mask_blend_ps(1, scaled(x), x);
      _mm512_storeu_ps(scores + at, x);
    }
    lane = _mm512_mask_mov_ps(lane, _mm512_cmp_ps_mask(x, lane, _CMP_GT_OQ), x);
  }
  if (scaling)
    for (int64_t j = std::max<int64_t>(at, 1); j < n; ++j)
      scores[j] = static_cast<float>(scores[j] * scale);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, lane);
  float mx = lanes[0];
  for (int i = 1; i < 16; ++i)
    mx = std::max(mx, lanes[i]);
  for (; at < n; ++at)
    mx = std::max(mx, scores[at]);
  // expApprox (Math.h), operation for operation; its comparisons written
  // so that a NaN passes through as it does there.
  const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.3f),
               shifter = _mm512_set1_ps(12582912.0f), m = _mm512_set1_ps(mx);
  auto exp16 = [&](__m512 x) {
    x = _mm512_max_ps(lo, x); // x < -87.3 ? -87.3 : x
    x = _mm512_min_ps(hi, x); // x > 88.3 ? 88.3 : x
    __m512 k = _mm512_sub_ps(
        _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shifter),
        shifter);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860682030941723e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    for (float c : {1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f})
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    __mmask16 ordered = _mm512_cmp_ps_mask(k, k, _CMP_ORD_Q);
    __m512i e = _mm512_maskz_cvttps_epi32(ordered, k);
    e = _mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  };
  __m512d part = _mm512_setzero_pd();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 w = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + j), m));
    _mm512_storeu_ps(scores + j, w);
    part = _mm512_add_pd(part, _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
    part = _mm512_add_pd(part, _mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)));
  }
  if (j < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - j)) - 1);
    __m512 w = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, scores + j), m));
    _mm512_mask_storeu_ps(scores + j, k, w);
    // Lane i takes j + i and j + 8 + i, in that order, as the scalar loop.
    part = _mm512_mask_add_pd(part, static_cast<__mmask8>(k), part,
                              _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
    part = _mm512_mask_add_pd(part, static_cast<__mmask8>(k >> 8), part,
                              _mm512_cvtps_pd(_mm512_extractf32x8_ps(w, 1)));
  }
  alignas(64) double sums[8];
  _mm512_store_pd(sums, part);
  for (int w = 4; w > 0; w /= 2)
    for (int i = 0; i < w; ++i)
      sums[i] += sums[i + w];
  return sums[0];
}

void widenRowE4M3(const uint8_t *src, int64_t n, float scale, float *dst) {
  // Through f16 (value * 2^-8, exact), then f32 times 2^8 * scale: exact
  // for a power-of-two scale.
  const float f = 256.0f * scale;
  int64_t c = 0;
  for (; c + 16 <= n; c += 16)
    _mm512_storeu_ps(dst + c, load16<KVType::F8E4M3>(src + c, f));
  for (; c < n; ++c)
    dst[c] = scalar<KVType::F8E4M3>(src[c], f);
}

void packQueries4(const float *const *a, int64_t n, float *q) {
  const int64_t full = n / 8 * 8;
  for (int p = 0; p < 2; ++p) {
    const float *lo = a[2 * p], *hi = a[2 * p + 1];
    float *dst = q + p * 2 * full;
    for (int64_t c = 0; c < full; c += 8)
      _mm512_storeu_ps(
          dst + 2 * c,
          _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo + c)),
                             _mm256_loadu_ps(hi + c), 1));
  }
}

namespace {

template <KVType Type>
void dotRows4T(const float *q, const float *const *a, const Elem<Type> *b,
               int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
               int64_t ld, float f = 1.0f) {
  int64_t j = j0;
  for (; j + 8 <= j1; j += 8)
    dotBlock<2, 8, Type>(q, a, b, stride, n, j, s, ld, f);
  for (; j + 4 <= j1; j += 4)
    dotBlock<2, 4, Type>(q, a, b, stride, n, j, s, ld, f);
  for (; j < j1; ++j)
    dotBlock<2, 1, Type>(q, a, b, stride, n, j, s, ld, f);
}

template <KVType Type>
void weightedSums4x64T(const float *p, int64_t ldp,
                       const Elem<Type> *const *rows, bool shared,
                       int64_t stride, int64_t j0, int64_t j1, int64_t c0,
                       float *out, int64_t ldo, float f = 1.0f) {
  __m512 acc[4][4];
  for (int h = 0; h < 4; ++h)
    for (int v = 0; v < 4; ++v)
      acc[h][v] = _mm512_loadu_ps(out + h * ldo + c0 + 16 * v);
  if (shared) {
    const Elem<Type> *row = rows[0] + c0;
    for (int64_t j = j0; j < j1; ++j) {
      __m512 x[4];
      for (int v = 0; v < 4; ++v)
        x[v] = load16<Type>(row + j * stride + 16 * v, f);
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
          acc[h][v] =
              _mm512_fmadd_ps(w, load16<Type>(row + 16 * v, f), acc[h][v]);
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

void dotRows8(const float *q, const float *const *a, const float *b,
              int64_t stride, int64_t n, int64_t j0, int64_t j1, float *s,
              int64_t ld) {
  // 4 pairs of heads: 4 query and 4 key loads per 16 FMAs (the 4-head
  // loop's 8-row blocks take 10), the broadcast key loads being the slower.
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4)
    dotBlock<4, 4, KVType::F32>(q, a, b, stride, n, j, s, ld);
  for (; j < j1; ++j)
    dotBlock<4, 1, KVType::F32>(q, a, b, stride, n, j, s, ld);
}

void dotRows4(const float *q, const float *const *a, const void *b, KVType type,
              float scale, int64_t stride, int64_t n, int64_t j0, int64_t j1,
              float *s, int64_t ld) {
  if (type == KVType::BF16)
    dotRows4T<KVType::BF16>(q, a, static_cast<const uint16_t *>(b), stride, n,
                            j0, j1, s, ld);
  else if (type == KVType::F16)
    dotRows4T<KVType::F16>(q, a, static_cast<const uint16_t *>(b), stride, n,
                           j0, j1, s, ld);
  else
    dotRows4T<KVType::F8E4M3>(q, a, static_cast<const uint8_t *>(b), stride, n,
                              j0, j1, s, ld, 256.0f * scale);
}

void weightedSums4x64(const float *p, int64_t ldp, const float *const *rows,
                      bool shared, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo) {
  weightedSums4x64T<KVType::F32>(p, ldp, rows, shared, stride, j0, j1, c0, out,
                                 ldo);
}

void weightedSums4x64(const float *p, int64_t ldp, const void *row, KVType type,
                      float scale, int64_t stride, int64_t j0, int64_t j1,
                      int64_t c0, float *out, int64_t ldo) {
  if (type == KVType::F8E4M3) {
    const uint8_t *rows[4] = {static_cast<const uint8_t *>(row)};
    weightedSums4x64T<KVType::F8E4M3>(p, ldp, rows, true, stride, j0, j1, c0,
                                      out, ldo, 256.0f * scale);
    return;
  }
  const uint16_t *rows[4] = {static_cast<const uint16_t *>(row)};
  if (type == KVType::BF16)
    weightedSums4x64T<KVType::BF16>(p, ldp, rows, true, stride, j0, j1, c0, out,
                                    ldo);
  else
    weightedSums4x64T<KVType::F16>(p, ldp, rows, true, stride, j0, j1, c0, out,
                                   ldo);
}

} // namespace ds::rt::kernels::avx512
