//===- ReferenceKernels.h - the oracle's kernels, shared ------------------===//
//
// Kernels of the reference interpreter that the runtime's tests also check
// against: plain loops in double, free of MLIR, so the compiler-free runtime
// tests link the very code the interpreter runs instead of a copy.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_REFERENCEKERNELS_H
#define DS_SUPPORT_REFERENCEKERNELS_H

#include <algorithm>
#include <cmath>
#include <cstdint>
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

} // namespace ds::reference

#endif // DS_SUPPORT_REFERENCEKERNELS_H
