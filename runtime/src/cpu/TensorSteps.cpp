//===- TensorSteps.cpp - embedding, rms_norm, split, reshape --------------===//

#include "Steps.h"

#include "ds/rt/Kernels.h"

#include <cstring>

namespace ds::rt::cpu {

absl::Status checkEmbedding(const ShapeView &v) {
  const Step &s = v.step;
  const WeightInfo &t = v.model.plan().weights[s.weights[0]];
  const auto &cfg = s.as<steps::Embedding>();
  if (v.count(s.results[0]) != v.count(s.operands[0]) * t.shape[1])
    return v.bad("embedding output");
  if (cfg.vocab > 0 ? cfg.firstRow > cfg.vocab - t.shape[0] : cfg.firstRow != 0)
    return v.bad("embedding block of the vocabulary");
  return absl::OkStatus();
}

absl::Status runEmbedding(StepContext &c) {
  const Step &s = c.step;
  const WeightInfo &w = c.model.plan().weights[s.weights[0]];
  int32_t ids = s.operands[0];
  int64_t n = numElements(c.shape(ids));
  const auto &cfg = s.as<steps::Embedding>();
  const int64_t vocab = cfg.vocab > 0 ? cfg.vocab : w.shape[0];
  int64_t bad = cfg.vocab > 0
                    ? kernels::embeddingBlock(c.weight(0), cfg.firstRow,
                                              w.shape[0], vocab, w.shape[1],
                                              c.I(ids), n, c.F(s.results[0]))
                    : kernels::embedding(c.weight(0), w.shape[0], w.shape[1],
                                         c.I(ids), n, c.F(s.results[0]));
  if (bad >= 0)
    return c.error(absl::StrCat("token id ", c.I(ids)[bad],
                                " is outside the vocabulary [0, ", vocab, ")"));
  return absl::OkStatus();
}

absl::Status checkRMSNorm(const ShapeView &v) {
  const Step &s = v.step;
  if (v.weightCount(s.weights[0]) != v.last(s.operands[0]) ||
      v.count(s.results[0]) != v.count(s.operands[0]))
    return v.bad("rms_norm weight or output");
  return absl::OkStatus();
}

absl::Status runRMSNorm(StepContext &c) {
  const Step &s = c.step;
  int32_t x = s.operands[0];
  kernels::rmsNorm(c.F(x), c.weight(0), c.rows(x), c.shape(x).back(),
                   s.as<steps::RMSNorm>().epsilon, c.F(s.results[0]));
  return absl::OkStatus();
}

absl::Status checkCopy(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::Copy>();
  const auto &xs = v.of(s.operands[0]);
  if (cfg.axis >= static_cast<int64_t>(xs.size()))
    return v.bad("split axis");
  int64_t total = 0,
          rest = v.count(s.operands[0]) / std::max<int64_t>(xs[cfg.axis], 1);
  for (size_t r = 0; r < s.results.size(); ++r) {
    if (cfg.sizes[r] < 0 || v.count(s.results[r]) != rest * cfg.sizes[r])
      return v.bad("split piece");
    total += cfg.sizes[r];
  }
  if (total != xs[cfg.axis])
    return v.bad("split sizes");
  return absl::OkStatus();
}

absl::Status runCopy(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::Copy>();
  int32_t x = s.operands[0];
  const auto &xs = c.shape(x);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < cfg.axis; ++d)
    outer *= xs[d];
  for (size_t d = cfg.axis + 1; d < xs.size(); ++d)
    inner *= xs[d];
  int64_t width = xs[cfg.axis] * inner, at = 0;
  for (size_t r = 0; r < s.results.size(); ++r) {
    int64_t piece = cfg.sizes[r] * inner;
    float *dst = c.F(s.results[r]);
    const float *src = c.F(x) + at;
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + o * piece, src + o * width, piece * sizeof(float));
    at += piece;
  }
  return absl::OkStatus();
}

absl::Status checkAlias(const ShapeView &v) {
  if (v.count(v.step.results[0]) != v.count(v.step.operands[0]))
    return v.bad("reshape element count");
  return absl::OkStatus();
}

} // namespace ds::rt::cpu
