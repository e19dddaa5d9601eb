//===- Attention.cpp - causal attention over slot-indexed KV caches -------===//
//
// MHA/GQA attention and DeepSeek's MLA in absorbed form. A query at position
// p reads only cache rows [first, p] of its batch row's slot (first > 0 with
// a sliding window). Scores and the weighted value sum accumulate in f32; the
// softmax normalizer is summed in double as the interpreter does. Work items
// are (batch, query, head) triples, split over the thread pool when the loop
// is large enough to pay for waking it.
//
//===----------------------------------------------------------------------===//

#include "Math.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
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

/// y[c] += a * x[c].
inline void axpy(float a, const float *x, float *y, int64_t n) {
  for (int64_t c = 0; c < n; ++c)
    y[c] += a * x[c];
}

/// Replaces scores[0, n) by exp(score - max) and returns their sum.
double softmaxWeights(float *scores, int64_t n) {
  float mx = scores[0];
  for (int64_t j = 1; j < n; ++j)
    mx = std::max(mx, scores[j]);
  for (int64_t j = 0; j < n; ++j)
    scores[j] = expApprox(scores[j] - mx);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j)
    sum += scores[j];
  return sum;
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

} // namespace

void attention(const float *q, int64_t batch, int64_t seq, int64_t heads,
               int64_t d, const float *k, const float *v, int64_t maxLen,
               int64_t kvHeads, int64_t dv, const int64_t *slots,
               const int64_t *positions, int64_t window, double scale,
               float *out, ThreadPool *pool) {
  int64_t group = heads / std::max<int64_t>(kvHeads, 1);
  int64_t kStride = kvHeads * d, vStride = kvHeads * dv;
  double keys = 0;
  for (int64_t i = 0; i < batch * seq; ++i)
    keys +=
        static_cast<double>(positions[i] - firstRow(positions[i], window) + 1);
  double work = keys * heads * static_cast<double>(d + dv);

  auto body = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    scratch.resize(maxLen + dv);
    float *scores = scratch.data(), *acc = scores + maxLen;
    for (int64_t item = begin; item < end; ++item) {
      int64_t h = item % heads, bs = item / heads, b = bs / seq;
      int64_t kvh = h / group;
      int64_t pos = positions[bs], first = firstRow(pos, window);
      int64_t len = pos - first + 1;
      float *o = out + item * dv;
      if (len <= 0) { // an invalid position: nothing to attend to
        std::fill(o, o + dv, 0.0f);
        continue;
      }
      const float *qh = q + item * d;
      const float *kRows = k + (slots[b] * maxLen + first) * kStride + kvh * d;
      const float *vRows = v + (slots[b] * maxLen + first) * vStride + kvh * dv;
      for (int64_t j = 0; j < len; ++j)
        scores[j] = static_cast<float>(dot(qh, kRows + j * kStride, d) * scale);
      double sum = softmaxWeights(scores, len);
      std::fill(acc, acc + dv, 0.0f);
      for (int64_t j = 0; j < len; ++j)
        axpy(scores[j], vRows + j * vStride, acc, dv);
      float inv = static_cast<float>(1.0 / sum);
      for (int64_t c = 0; c < dv; ++c)
        o[c] = acc[c] * inv;
    }
  };
  forItems(pool, batch * seq * heads, work, body);
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
    std::vector<float> scratch(maxLen + 2 * rank);
    float *scores = scratch.data(), *qAbs = scores + maxLen,
          *oLat = qAbs + rank;
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

void mlaAttentionPacked(const float *qNope, const float *qPe, int64_t batch,
                        int64_t seq, int64_t heads, int64_t dn, int64_t dr,
                        const float *cKv, const float *kPe, int64_t maxLen,
                        int64_t rank, const PackedWeight *ukT,
                        const PackedWeight *uv, int64_t dv,
                        const int64_t *slots, const int64_t *positions,
                        double scale, float *out, ThreadPool *pool,
                        const float *ukScales) {
  const int64_t rows = batch * seq;
  thread_local std::vector<float> qAbs, oLat, qScaled;
  qAbs.resize(rows * heads * rank);
  oLat.resize(rows * heads * rank);
  // An int8 W_ukᵀ has kv_b's row scales along K: fold them into the
  // queries.
  if (ukScales) {
    qScaled.resize(rows * heads * dn);
    for (int64_t r = 0; r < rows * heads; ++r)
      for (int64_t i = 0; i < dn; ++i)
        qScaled[r * dn + i] =
            qNope[r * dn + i] * ukScales[(r % heads) * dn + i];
    qNope = qScaled.data();
  }
  // q_abs[row, h] = W_ukᵀ q_nope[row, h]: one GEMM per head over all rows.
  for (int64_t h = 0; h < heads; ++h)
    gemm(qNope + h * dn, rows, heads * dn, ukT[h], nullptr,
         qAbs.data() + h * rank, heads * rank, pool);
  double keys = 0;
  for (int64_t i = 0; i < rows; ++i)
    keys += static_cast<double>(positions[i] + 1);
  double work = keys * heads * static_cast<double>(2 * rank + dr);
  float *qa = qAbs.data(), *ol = oLat.data();
  auto body = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scores;
    scores.resize(maxLen);
    for (int64_t item = begin; item < end; ++item) {
      int64_t bs = item / heads, b = bs / seq;
      int64_t len = positions[bs] + 1;
      float *o = ol + item * rank;
      if (len <= 0) { // an invalid position: nothing to attend to
        std::fill(o, o + rank, 0.0f);
        continue;
      }
      const float *q = qa + item * rank, *qp = qPe + item * dr;
      const float *lat = cKv + slots[b] * maxLen * rank;
      const float *pe = kPe + slots[b] * maxLen * dr;
      for (int64_t j = 0; j < len; ++j)
        scores[j] = static_cast<float>(
            (dot(q, lat + j * rank, rank) + dot(qp, pe + j * dr, dr)) * scale);
      double sum = softmaxWeights(scores.data(), len);
      float inv = static_cast<float>(1.0 / sum);
      std::fill(o, o + rank, 0.0f);
      for (int64_t j = 0; j < len; ++j)
        axpy(scores[j] * inv, lat + j * rank, o, rank);
    }
  };
  forItems(pool, rows * heads, work, body);
  // out[row, h] = W_uv o_lat[row, h].
  for (int64_t h = 0; h < heads; ++h)
    gemm(oLat.data() + h * rank, rows, heads * rank, uv[h], nullptr,
         out + h * dv, heads * dv, pool);
}

} // namespace ds::rt::kernels
