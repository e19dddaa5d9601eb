//===- Ops.cpp - activations, norms, RoPE, cache and router kernels -------===//
//
// The small kernels of the runtime: activations, RMSNorm, GLU, embedding
// lookup, rotary embedding, slot-indexed KV-cache writes and the MoE router.
// Each computes what the reference interpreter (interpreter/Interpreter.cpp)
// computes for f32 data; sums the interpreter keeps in double (RMSNorm's sum
// of squares, the router's softmax) are kept in double here too.
//
//===----------------------------------------------------------------------===//

#include "Math.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadScratch.h"
#include "ds/support/DType.h"
#include "ds/support/ReferenceKernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace ds::rt::kernels {

namespace {

constexpr double kPi = 3.14159265358979323846;

inline float silu(float x) { return x / (1.0f + expApprox(-x)); }
inline float gelu(float x) {
  return 0.5f * x * (1.0f + std::erf(x / std::sqrt(2.0f)));
}
inline float geluTanh(float x) {
  const float c = std::sqrt(2.0f / static_cast<float>(kPi));
  return 0.5f * x * (1.0f + std::tanh(c * (x + 0.044715f * x * x * x)));
}
inline float relu(float x) { return x > 0.0f ? x : 0.0f; }
inline float sigmoid(float x) { return 1.0f / (1.0f + expApprox(-x)); }

/// y[c] = f(x[c]) * u[c] for c < n, with the activation inlined in the loop.
template <float (*F)(float)>
void gluRow(const float *x, const float *u, int64_t n, float *y) {
  for (int64_t c = 0; c < n; ++c)
    y[c] = F(x[c]) * u[c];
}

} // namespace

float activate(Act act, float x) {
  switch (act) {
  case Act::Silu:
    return silu(x);
  case Act::Gelu:
    return gelu(x);
  case Act::GeluTanh:
    return geluTanh(x);
  case Act::Relu:
    return relu(x);
  case Act::Sigmoid:
    return sigmoid(x);
  }
  return x;
}

void roundValues(float *x, int64_t n, Round r) {
  if (r == Round::None)
    return;
  if (r == Round::BF16) {
    // Round to nearest even on the top 16 bits (NaNs stay NaN: their
    // mantissa is nonzero above bit 16 or becomes so).
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &x[i], 4);
      bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
      uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) & 0xffff0000u;
      bits = nan ? (bits | 0x00400000u) & 0xffff0000u : rounded;
      std::memcpy(&x[i], &bits, 4);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(static_cast<_Float16>(x[i]));
}

void rmsNorm(const float *x, const float *w, int64_t rows, int64_t d,
             double eps, float *y, Round round) {
  constexpr int kLanes = 8;
  for (int64_t r = 0; r < rows; ++r) {
    const float *xr = x + r * d;
    float *yr = y + r * d;
    // The sum of squares in double, in kLanes partial sums (vectorizable).
    double part[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= d; c += kLanes)
      for (int i = 0; i < kLanes; ++i)
        part[i] += static_cast<double>(xr[c + i]) * xr[c + i];
    double ss = 0;
    for (; c < d; ++c)
      ss += static_cast<double>(xr[c]) * xr[c];
    for (int i = 0; i < kLanes; ++i)
      ss += part[i];
    float inv = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
    if (round == Round::None) {
      for (c = 0; c < d; ++c)
        yr[c] = w[c] * (xr[c] * inv);
      continue;
    }
    for (c = 0; c < d; ++c)
      yr[c] = xr[c] * inv;
    roundValues(yr, d, round);
    for (c = 0; c < d; ++c)
      yr[c] *= w[c];
    roundValues(yr, d, round);
  }
}

void glu(const float *x, int64_t rows, int64_t half, Act act, float *y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float *g = x + r * 2 * half, *u = g + half;
    float *yr = y + r * half;
    switch (act) {
    case Act::Silu:
      gluRow<silu>(g, u, half, yr);
      break;
    case Act::Gelu:
      gluRow<gelu>(g, u, half, yr);
      break;
    case Act::GeluTanh:
      gluRow<geluTanh>(g, u, half, yr);
      break;
    case Act::Relu:
      gluRow<relu>(g, u, half, yr);
      break;
    case Act::Sigmoid:
      gluRow<sigmoid>(g, u, half, yr);
      break;
    }
  }
}

int64_t embeddingBlock(const float *table, int64_t first, int64_t rows,
                       int64_t vocab, int64_t h, const int64_t *ids, int64_t n,
                       float *out) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = ids[i];
    if (id < 0 || id >= vocab)
      return i;
    if (id >= first && id < first + rows)
      std::memcpy(out + i * h, table + (id - first) * h, sizeof(float) * h);
    else
      std::memset(out + i * h, 0, sizeof(float) * h);
  }
  return -1;
}

int64_t embedding(const float *table, int64_t vocab, int64_t h,
                  const int64_t *ids, int64_t n, float *out) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = ids[i];
    if (id < 0 || id >= vocab)
      return i;
    std::memcpy(out + i * h, table + id * h, sizeof(float) * h);
  }
  return -1;
}

void rope(float *x, int64_t tokens, int64_t heads, int64_t dFull, int64_t dim,
          const float *invFreq, float scaling, int32_t style,
          const int64_t *positions) {
  int64_t half = dim / 2;
  // cos, sin, and (deinterleave only) a copy of the rotated features.
  ThreadScratch::Scope scope;
  float *cosv = scope.array<float>(ropeScratchBytes(dim) / sizeof(float));
  float *sinv = cosv + half, *tmp = sinv + half;
  for (int64_t t = 0; t < tokens; ++t) {
    float p = static_cast<float>(positions[t]);
    for (int64_t j = 0; j < half; ++j) {
      float ang = p * invFreq[j];
      cosv[j] = std::cos(ang) * scaling;
      sinv[j] = std::sin(ang) * scaling;
    }
    for (int64_t h = 0; h < heads; ++h) {
      float *v = x + (t * heads + h) * dFull;
      switch (style) {
      case 0: // rotate_half
        for (int64_t j = 0; j < half; ++j) {
          float a = v[j], b = v[j + half];
          v[j] = a * cosv[j] - b * sinv[j];
          v[j + half] = b * cosv[j] + a * sinv[j];
        }
        break;
      case 1: // interleaved
        for (int64_t j = 0; j < half; ++j) {
          float a = v[2 * j], b = v[2 * j + 1];
          v[2 * j] = a * cosv[j] - b * sinv[j];
          v[2 * j + 1] = b * cosv[j] + a * sinv[j];
        }
        break;
      default: // deinterleave: reads pairs, writes halves
        std::memcpy(tmp, v, sizeof(float) * 2 * half);
        for (int64_t j = 0; j < half; ++j) {
          float a = tmp[2 * j], b = tmp[2 * j + 1];
          v[j] = a * cosv[j] - b * sinv[j];
          v[j + half] = b * cosv[j] + a * sinv[j];
        }
        break;
      }
    }
  }
}

void narrowRow(const float *x, int64_t n, KVType type, void *dst, float scale) {
  if (type == KVType::F32) {
    std::memcpy(dst, x, sizeof(float) * n);
    return;
  }
  if (type == KVType::F8E4M3) {
    // A power-of-two scale: x / scale is exact.
    auto *y = static_cast<uint8_t *>(dst);
    for (int64_t c = 0; c < n; ++c)
      y[c] = ::ds::floatToF8E4M3(x[c] / scale);
    return;
  }
  auto *y = static_cast<uint16_t *>(dst);
  for (int64_t c = 0; c < n; ++c)
    y[c] = type == KVType::BF16 ? ::ds::floatToBF16(x[c])
                                : ::ds::floatToHalf(x[c]);
}

void cacheUpdate(void *cache, KVType type, int64_t maxLen, int64_t row,
                 const int64_t *slots, const float *update,
                 const int64_t *positions, int64_t batch, int64_t seq,
                 float scale) {
  const int64_t size = kvTypeSize(type);
  for (int64_t b = 0; b < batch; ++b) {
    char *slot = static_cast<char *>(cache) + slots[b] * maxLen * row * size;
    for (int64_t s = 0; s < seq; ++s)
      narrowRow(update + (b * seq + s) * row, row, type,
                slot + positions[b * seq + s] * row * size, scale);
  }
}

uint64_t ropeScratchBytes(int64_t dim) {
  return scratchRound(sizeof(float) *
                      static_cast<uint64_t>(2 * (dim / 2) + dim));
}

uint64_t routeScratchBytes(const RouterConfig &config) {
  const uint64_t e = static_cast<uint64_t>(config.numExperts);
  const uint64_t groups =
      static_cast<uint64_t>(std::max<int64_t>(config.nGroup, 1));
  const uint64_t cand =
      static_cast<uint64_t>(config.kept ? config.numKept : config.numExperts);
  const uint64_t placement =
      config.slots
          ? scratchRound(8 * (cand + 1)) +
                scratchRound(8 * static_cast<uint64_t>(config.numSlots))
          : 0;
  return 2 * scratchRound(4 * e) + scratchRound(4 * groups) +
         scratchRound(8 * e) + scratchRound(groups) + scratchRound(cand) +
         scratchRound(8 * static_cast<uint64_t>(config.topK)) + placement;
}

void route(const float *logits, const float *bias, int64_t n,
           const RouterConfig &config, float *weights, int32_t *indices) {
  int64_t e = config.numExperts, k = config.topK;
  int64_t groups = std::max<int64_t>(config.nGroup, 1);
  int64_t keep = config.topkGroup, perGroup = e / groups;
  const int64_t *kept = config.kept;
  bool pruned = kept != nullptr;
  // Candidates in the order the interpreter stable-sorts them: all experts,
  // or the kept ones (sorted global ids).
  int64_t numCand = pruned ? config.numKept : e;
  // Taken in the order routeScratchBytes counts them.
  ThreadScratch::Scope scope;
  float *s = scope.array<float>(e), *sel = scope.array<float>(e);
  float *groupScore = scope.array<float>(groups);
  double *ex = scope.array<double>(e);
  char *groupKept = scope.array<char>(groups);
  char *taken = scope.array<char>(numCand);
  int64_t *chosen = scope.array<int64_t>(k);
  const float negInf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < n; ++t) {
    const float *l = logits + t * e;
    if (!config.sigmoid) {
      float mx = *std::max_element(l, l + e);
      double sum = 0;
      for (int64_t j = 0; j < e; ++j) {
        ex[j] = std::exp(static_cast<double>(l[j]) - mx);
        sum += ex[j];
      }
      for (int64_t j = 0; j < e; ++j)
        s[j] = static_cast<float>(ex[j] / sum);
    } else {
      for (int64_t j = 0; j < e; ++j)
        s[j] = 1.0f / (1.0f + std::exp(-l[j]));
    }
    for (int64_t j = 0; j < e; ++j)
      sel[j] = s[j] + (bias ? bias[j] : 0.0f);

    if (groups > 1) {
      // Group score: the largest member, or the sum of the two largest.
      for (int64_t g = 0; g < groups; ++g) {
        const float *m = sel + g * perGroup;
        float first = m[0], second = negInf;
        for (int64_t i = 1; i < perGroup; ++i) {
          if (m[i] > first) {
            second = first;
            first = m[i];
          } else if (m[i] > second) {
            second = m[i];
          }
        }
        groupScore[g] =
            config.groupScoreMax || perGroup < 2 ? first : first + second;
      }
      // The topkGroup best groups, ties to the lower group (stable order).
      std::fill(groupKept, groupKept + groups, 0);
      for (int64_t r = 0; r < keep && r < groups; ++r) {
        int64_t best = -1;
        for (int64_t g = 0; g < groups; ++g)
          if (!groupKept[g] && (best < 0 || groupScore[g] > groupScore[best]))
            best = g;
        groupKept[best] = 1;
      }
      for (int64_t j = 0; j < e; ++j)
        if (!groupKept[j / perGroup])
          sel[j] = negInf;
    }

    // The top k candidates by selection score, ties to the earlier candidate
    // (what a stable descending sort of the candidate list gives).
    std::fill(taken, taken + numCand, 0);
    for (int64_t r = 0; r < k; ++r) {
      int64_t best = -1;
      for (int64_t c = 0; c < numCand; ++c) {
        if (taken[c])
          continue;
        if (best < 0 ||
            sel[pruned ? kept[c] : c] > sel[pruned ? kept[best] : best])
          best = c;
      }
      if (best >= 0)
        taken[best] = 1;
      chosen[r] = best; // -1: fewer candidates than k (an invalid config)
    }

    double sum = 0;
    for (int64_t r = 0; r < k; ++r)
      if (chosen[r] >= 0)
        sum += s[pruned ? kept[chosen[r]] : chosen[r]];
    for (int64_t r = 0; r < k; ++r) {
      if (chosen[r] < 0) {
        weights[t * k + r] = 0.0f;
        indices[t * k + r] = 0;
        continue;
      }
      int64_t global = pruned ? kept[chosen[r]] : chosen[r];
      double w = s[global];
      if (config.normTopkProb)
        w /= (sum + config.normEpsilon);
      weights[t * k + r] = static_cast<float>(w * config.scalingFactor);
      indices[t * k + r] = static_cast<int32_t>(
          pruned ? std::lower_bound(kept, kept + config.numKept, global) - kept
                 : global);
    }
  }
  if (config.slots) {
    // The plan's validation made every expert a slot's: this cannot fail.
    int64_t *first = scope.array<int64_t>(numCand + 1);
    int64_t *list = scope.array<int64_t>(config.numSlots);
    ds::reference::placeOnSlots(indices, n, k, config.slots, config.numSlots,
                                numCand, first, list);
  }
}

} // namespace ds::rt::kernels
