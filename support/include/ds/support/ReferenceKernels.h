//===- ReferenceKernels.h - the oracle's kernels, shared ------------------===//
//
// Kernels of the reference interpreter that the runtime's tests also check
// against (attention, the MoE router): plain loops, free of MLIR, so the
// compiler-free runtime tests run the very code the interpreter runs
// instead of a copy.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_REFERENCEKERNELS_H
#define DS_SUPPORT_REFERENCEKERNELS_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace ds::reference {

/// Causal attention of one (batch, query) pair for every head: softmax over
/// positions [max(0, pos - window + 1), pos] (window 0: all) of
/// scale * q . k, in double. `key(j, h)` and `value(j, h)` return pointers
/// (float or double) to row j of KV head h; head h reads KV head
/// h / (heads / kvHeads). `out` [heads, dv] is float or double.
template <typename KeyFn, typename ValueFn, typename Out>
void attendOne(const float *q, int64_t heads, int64_t kvHeads, int64_t d,
               int64_t dv, int64_t pos, int64_t window, double scale, KeyFn key,
               ValueFn value, Out *out) {
  int64_t group = heads / kvHeads;
  int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
  std::vector<double> scores(pos + 1);
  for (int64_t h = 0; h < heads; ++h) {
    int64_t kvh = h / group;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = first; j <= pos; ++j) {
      const auto *kj = key(j, kvh);
      double dot = 0;
      for (int64_t c = 0; c < d; ++c)
        dot += static_cast<double>(q[h * d + c]) * kj[c];
      scores[j] = dot * scale;
      mx = std::max(mx, scores[j]);
    }
    double sum = 0;
    for (int64_t j = first; j <= pos; ++j) {
      scores[j] = std::exp(scores[j] - mx);
      sum += scores[j];
    }
    for (int64_t c = 0; c < dv; ++c) {
      double acc = 0;
      for (int64_t j = first; j <= pos; ++j)
        acc += scores[j] * value(j, kvh)[c];
      out[h * dv + c] = static_cast<Out>(acc / sum);
    }
  }
}

/// A MoE router's configuration (#ds.routing), for route().
struct RouteSpec {
  int64_t numExperts = 0, topK = 0, nGroup = 1, topkGroup = 1;
  bool sigmoid = false, groupScoreMax = false, normTopkProb = false;
  double normEpsilon = 0, scalingFactor = 1;
  /// Selectable experts (sorted global ids); empty: all.
  std::vector<int64_t> kept;
};

/// Routes n tokens from `logits` [n, numExperts] (+ `bias`, for selection
/// only): softmax or sigmoid scores, group-limited selection (groups ranked
/// by their best or best-two score), top-k among the kept experts (stable:
/// the lower id wins ties), optional renormalization, scaling. Writes
/// `weights` [n, topK] (double) and `indices` [n, topK] numbering the kept
/// experts. `forced` [n, topK] (kept numbering), when given, imposes the
/// selection; the weights still come from this router's scores.
inline void route(const float *logits, const float *bias, int64_t n,
                  const RouteSpec &spec, double *weights, int64_t *indices,
                  const int64_t *forced = nullptr) {
  const int64_t e = spec.numExperts, k = spec.topK;
  const int64_t groups = spec.nGroup, perGroup = e / groups;
  const std::vector<int64_t> &kept = spec.kept;
  std::vector<float> s(e), sel(e);
  for (int64_t t = 0; t < n; ++t) {
    const float *l = logits + t * e;
    if (!spec.sigmoid) {
      float mx = *std::max_element(l, l + e);
      double sum = 0;
      for (int64_t j = 0; j < e; ++j)
        sum += std::exp(static_cast<double>(l[j]) - mx);
      for (int64_t j = 0; j < e; ++j)
        s[j] =
            static_cast<float>(std::exp(static_cast<double>(l[j]) - mx) / sum);
    } else {
      for (int64_t j = 0; j < e; ++j)
        s[j] = 1.0f / (1.0f + std::exp(-l[j]));
    }
    for (int64_t j = 0; j < e; ++j)
      sel[j] = s[j] + (bias ? bias[j] : 0.0f);
    if (groups > 1) {
      std::vector<float> groupScore(groups);
      for (int64_t g = 0; g < groups; ++g) {
        std::vector<float> members(sel.begin() + g * perGroup,
                                   sel.begin() + (g + 1) * perGroup);
        std::sort(members.begin(), members.end(), std::greater<float>());
        groupScore[g] =
            spec.groupScoreMax ? members[0] : members[0] + members[1];
      }
      std::vector<int64_t> order(groups);
      for (int64_t g = 0; g < groups; ++g)
        order[g] = g;
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return groupScore[a] > groupScore[b];
      });
      std::vector<bool> keptGroup(groups, false);
      for (int64_t g = 0; g < spec.topkGroup; ++g)
        keptGroup[order[g]] = true;
      for (int64_t j = 0; j < e; ++j)
        if (!keptGroup[j / perGroup])
          sel[j] = -std::numeric_limits<float>::infinity();
    }
    // Pruned experts cannot be selected; indices number the kept ones.
    std::vector<int64_t> order;
    if (kept.empty()) {
      order.resize(e);
      for (int64_t j = 0; j < e; ++j)
        order[j] = j;
    } else {
      order = kept;
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return sel[a] > sel[b]; });
    if (forced)
      for (int64_t j = 0; j < k; ++j) {
        int64_t local = forced[t * k + j];
        order[j] = kept.empty() ? local : kept[local];
      }
    double sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += s[order[j]];
    for (int64_t j = 0; j < k; ++j) {
      double w = s[order[j]];
      if (spec.normTopkProb)
        w /= (sum + spec.normEpsilon);
      weights[t * k + j] = w * spec.scalingFactor;
      indices[t * k + j] =
          kept.empty() ? order[j]
                       : std::lower_bound(kept.begin(), kept.end(), order[j]) -
                             kept.begin();
    }
  }
}

/// Expert placement (#ds.routing `slots`): slot s of the expert weights
/// holds expert slots[s]. Rewrites `indices` [n, k] from expert numbering
/// to slot numbering: a token's expert e becomes the r-th slot holding e
/// (ascending), r = (sum of the token's k experts) mod (slots holding e).
/// The choice reads only the token's own selection, so every process
/// makes it alike and no result depends on the batch. Scratch: `first`
/// [numExperts + 1] and `list` [numSlots]. Returns false (nothing
/// written) when an index is outside [0, numExperts) or an expert has no
/// slot.
template <typename Int>
bool placeOnSlots(Int *indices, int64_t n, int64_t k, const int64_t *slots,
                  int64_t numSlots, int64_t numExperts, int64_t *first,
                  int64_t *list) {
  // Counting sort of the slots by expert: expert e's slots ascending in
  // list[first[e], first[e + 1]).
  std::fill(first, first + numExperts + 1, int64_t{0});
  for (int64_t s = 0; s < numSlots; ++s) {
    if (slots[s] < 0 || slots[s] >= numExperts)
      return false;
    ++first[slots[s] + 1];
  }
  for (int64_t e = 0; e < numExperts; ++e) {
    if (first[e + 1] == 0)
      return false;
    first[e + 1] += first[e];
  }
  for (int64_t s = 0; s < numSlots; ++s)
    list[first[slots[s]]++] = s;
  // first[e] now ends e's slots, which is where e + 1's begin.
  for (int64_t e = numExperts; e > 0; --e)
    first[e] = first[e - 1];
  first[0] = 0;
  for (int64_t i = 0; i < n * k; ++i)
    if (indices[i] < 0 || indices[i] >= numExperts)
      return false;
  for (int64_t t = 0; t < n; ++t) {
    Int *row = indices + t * k;
    int64_t key = 0;
    for (int64_t j = 0; j < k; ++j)
      key += row[j];
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = row[j], copies = first[e + 1] - first[e];
      row[j] = static_cast<Int>(list[first[e] + key % copies]);
    }
  }
  return true;
}

} // namespace ds::reference

#endif // DS_SUPPORT_REFERENCEKERNELS_H
