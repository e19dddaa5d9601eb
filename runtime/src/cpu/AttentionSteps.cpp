//===- AttentionSteps.cpp - rope, cache updates, attention and MLA --------===//

#include "Steps.h"

#include "ds/rt/KVCache.h"
#include "ds/rt/Kernels.h"

#include <algorithm>
#include <numeric>

namespace ds::rt::cpu {

absl::Status checkRope(const ShapeView &v) {
  const Step &s = v.step;
  int64_t tokens = v.count(s.operands[1]), d = v.last(s.operands[0]);
  if (v.count(s.results[0]) != v.count(s.operands[0]) ||
      s.as<steps::Rope>().rotaryDim > d ||
      (tokens && v.count(s.operands[0]) % (tokens * std::max<int64_t>(d, 1))))
    return v.bad("rope input and positions");
  return absl::OkStatus();
}

uint64_t scratchRope(const ShapeView &v) {
  return scratchFloats(
      static_cast<int64_t>(v.step.as<steps::Rope>().invFreq.size()));
}

ThreadScratchNeed threadScratchRope(const ShapeView &v) {
  return {kernels::ropeScratchBytes(v.step.as<steps::Rope>().rotaryDim), 0};
}

absl::Status runRope(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::Rope>();
  int32_t x = s.operands[0], pos = s.operands[1], y = s.results[0];
  const auto &xs = c.shape(x);
  int64_t tokens = numElements(c.shape(pos));
  int64_t dFull = xs.back();
  int64_t heads = tokens ? numElements(xs) / (tokens * dFull) : 0;
  float *invFreq = c.scratch(static_cast<int64_t>(cfg.invFreq.size()));
  if (!invFreq && !cfg.invFreq.empty())
    return c.error("scratch overflow (frequencies)");
  std::copy(cfg.invFreq.begin(), cfg.invFreq.end(), invFreq);
  if (c.F(y) != c.F(x))
    std::copy_n(c.F(x), numElements(xs), c.F(y));
  kernels::rope(c.F(y), tokens, heads, dFull, cfg.rotaryDim, invFreq,
                static_cast<float>(cfg.attentionScaling), cfg.style, c.I(pos));
  return absl::OkStatus();
}

absl::Status checkCacheUpdate(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cs = v.of(s.operands[0]), &us = v.of(s.operands[2]);
  if (cs.size() < 2 || us.size() < 2 ||
      v.count(s.operands[1]) != us[0] * us[1] ||
      v.count(s.operands[2]) !=
          us[0] * us[1] *
              (v.count(s.operands[0]) / std::max<int64_t>(cs[0] * cs[1], 1)))
    return v.bad("cache_update cache, positions and update");
  return absl::OkStatus();
}

absl::Status runCacheUpdate(StepContext &c) {
  const Step &s = c.step;
  int32_t cache = s.operands[0], pos = s.operands[1], upd = s.operands[2];
  const auto &cs = c.shape(cache);
  const auto &us = c.shape(upd);
  int64_t maxLen = cs[1], row = numElements(cs) / (cs[0] * cs[1]);
  int64_t b = us[0], t = us[1];
  if (b != cs[0])
    return c.error(
        absl::StrCat("cache batch ", cs[0], " differs from the update's ", b));
  for (int64_t i = 0; i < b * t; ++i)
    if (c.I(pos)[i] < 0 || c.I(pos)[i] >= maxLen)
      return c.error(absl::StrCat("position ", c.I(pos)[i],
                                  " is outside the cache [0, ", maxLen, ")"));
  kernels::cacheUpdate(c.ptr(cache), kvType(c.type(cache)), maxLen, row,
                       c.args.slots, c.F(upd), c.I(pos), b, t,
                       c.cacheScale(cache));
  return absl::OkStatus();
}

namespace {

/// Every position of the `count` query rows lies in [0, maxLen) of what
/// they attend to (`what`: "key/value length", "latent cache length").
absl::Status checkPositions(const StepContext &c, int32_t pos, int64_t count,
                            int64_t maxLen, const char *what) {
  for (int64_t i = 0; i < count; ++i)
    if (c.I(pos)[i] < 0 || c.I(pos)[i] >= maxLen)
      return c.error(absl::StrCat("position ", c.I(pos)[i], " is outside the ",
                                  what, " [0, ", maxLen, ")"));
  return absl::OkStatus();
}

/// The cache row each batch row reads: its slot when the keys are a cache,
/// else its own row of the in-graph keys (listed in the step's scratch,
/// keyRowsBytes of it; null when that is short).
const int64_t *keyRows(StepContext &c, bool cached, int64_t batch) {
  if (cached)
    return c.args.slots;
  auto *identity =
      static_cast<int64_t *>(c.scratchBytes(sizeof(int64_t) * batch));
  if (identity)
    std::iota(identity, identity + batch, 0);
  return identity;
}

uint64_t keyRowsBytes(bool cached, int64_t batch) {
  return cached ? 0 : alignScratch(sizeof(int64_t) * batch);
}

} // namespace

absl::Status checkAttention(const ShapeView &v) {
  const Step &s = v.step;
  int32_t q = s.operands[0], k = s.operands[1], val = s.operands[2];
  if (v.rank(q) != 4 || v.rank(k) != 4 || v.rank(val) != 4)
    return v.bad("attention ranks");
  const auto &qs = v.of(q), &ks = v.of(k), &vs = v.of(val);
  if (ks[2] <= 0 || qs[2] % ks[2] || qs[3] != ks[3] || vs[2] != ks[2] ||
      vs[1] != ks[1] || v.count(s.operands[3]) != qs[0] * qs[1] ||
      v.count(s.results[0]) != qs[0] * qs[1] * qs[2] * vs[3])
    return v.bad("attention heads, lengths or output");
  return absl::OkStatus();
}

uint64_t scratchAttention(const ShapeView &v) {
  return keyRowsBytes(v.step.as<steps::Attention>().cached,
                      v.of(v.step.operands[0])[0]);
}

ThreadScratchNeed threadScratchAttention(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::Attention>();
  const auto &qs = v.of(s.operands[0]), &ks = v.of(s.operands[1]),
             &vs = v.of(s.operands[2]);
  return kernels::attentionScratch(qs[0], qs[1], qs[2], qs[3],
                                   kvType(v.type(s.operands[1])), ks[1], ks[2],
                                   vs[3], cfg.slidingWindow);
}

absl::Status runAttention(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::Attention>();
  int32_t q = s.operands[0], kc = s.operands[1], vc = s.operands[2],
          pos = s.operands[3];
  const auto &qs = c.shape(q), &ks = c.shape(kc), &vs = c.shape(vc);
  int64_t maxLen = ks[1];
  if (absl::Status st =
          checkPositions(c, pos, qs[0] * qs[1], maxLen, "key/value length");
      !st.ok())
    return st;
  if (!cfg.cached && (ks[0] != qs[0] || vs[0] != qs[0] || vs[1] != maxLen))
    return c.error("keys, values and queries disagree on batch or length");
  const int64_t *rows = keyRows(c, cfg.cached, qs[0]);
  if (!rows)
    return c.error("scratch overflow (key rows)");
  kernels::attention(c.F(q), qs[0], qs[1], qs[2], qs[3], c.ptr(kc), c.ptr(vc),
                     kvType(c.type(kc)), maxLen, ks[2], vs[3], rows, c.I(pos),
                     cfg.slidingWindow, cfg.scale, c.F(s.results[0]), c.pool,
                     c.cacheScale(kc), c.cacheScale(vc));
  return absl::OkStatus();
}

absl::Status checkMLAAttention(const ShapeView &v) {
  const Step &s = v.step;
  for (int i = 0; i < 4; ++i)
    if (v.rank(s.operands[i]) != (i < 2 ? 4u : 3u))
      return v.bad("mla_attention ranks");
  const auto &ns = v.of(s.operands[0]), &ps = v.of(s.operands[1]);
  const auto &cs = v.of(s.operands[2]), &ks = v.of(s.operands[3]);
  const auto &uv = v.model.packed(s.weights[1]);
  if (ps[0] != ns[0] || ps[1] != ns[1] || ps[2] != ns[2] || ks[2] != ps[3] ||
      ks[1] != cs[1] || v.count(s.operands[4]) != ns[0] * ns[1] || uv.empty() ||
      uv[0].k != cs[2] ||
      v.count(s.results[0]) != ns[0] * ns[1] * ns[2] * uv[0].n)
    return v.bad("mla_attention queries, latents or output");
  return absl::OkStatus();
}

uint64_t scratchMLAAttention(const ShapeView &v) {
  const Step &s = v.step;
  const auto &ns = v.of(s.operands[0]), &cs = v.of(s.operands[2]);
  return keyRowsBytes(s.as<steps::MLAAttention>().cached, ns[0]) +
         scratchFloats(kernels::mlaScratchFloats(ns[0] * ns[1], ns[2], cs[2],
                                                 ns[3], s.weights.size() > 2));
}

ThreadScratchNeed threadScratchMLAAttention(const ShapeView &v) {
  const Step &s = v.step;
  const auto &ns = v.of(s.operands[0]), &ps = v.of(s.operands[1]),
             &cs = v.of(s.operands[2]);
  const auto &ukT = v.model.packed(s.weights[0]);
  const auto &uv = v.model.packed(s.weights[1]);
  return kernels::mlaAttentionScratch(
      ns[0], ns[1], ns[2], ns[3], ps[3], kvType(v.type(s.operands[2])), cs[1],
      cs[2], ukT.empty() ? kernels::WeightFormat::F32 : ukT[0].format,
      uv.empty() ? kernels::WeightFormat::F32 : uv[0].format);
}

absl::Status runMLAAttention(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::MLAAttention>();
  int32_t qn = s.operands[0], qp = s.operands[1], ckv = s.operands[2],
          kpe = s.operands[3], pos = s.operands[4];
  const auto &ns = c.shape(qn), &ps = c.shape(qp), &cs = c.shape(ckv);
  const auto &ukT = c.model.packed(s.weights[0]);
  const auto &uv = c.model.packed(s.weights[1]);
  int64_t heads = ns[2], dn = ns[3];
  if (static_cast<int64_t>(ukT.size()) != heads ||
      static_cast<int64_t>(uv.size()) != heads || ukT[0].k != dn ||
      ukT[0].n != cs[2])
    return c.error("MLA projections do not match the queries");
  int64_t dv = uv[0].n;
  int64_t maxLen = cs[1];
  const float *kScales = nullptr;
  if (s.weights.size() > 2) {
    if (c.model.plan().weights[s.weights[2]].shape !=
        std::vector<int64_t>{heads, dn})
      return c.error("MLA query scales do not match the queries");
    kScales = c.weight(2);
  }
  if (absl::Status st =
          checkPositions(c, pos, ns[0] * ns[1], maxLen, "latent cache length");
      !st.ok())
    return st;
  if (!cfg.cached &&
      (cs[0] != ns[0] || c.shape(kpe)[0] != ns[0] || c.shape(kpe)[1] != maxLen))
    return c.error("latents and queries disagree on batch or length");
  const int64_t *rows = keyRows(c, cfg.cached, ns[0]);
  if (!rows)
    return c.error("scratch overflow (key rows)");
  float *scratch = c.scratch(kernels::mlaScratchFloats(
      ns[0] * ns[1], heads, cs[2], dn, kScales != nullptr));
  if (!scratch)
    return c.error("scratch overflow (MLA queries)");
  kernels::mlaAttentionPacked(
      c.F(qn), c.F(qp), ns[0], ns[1], heads, dn, ps[3], c.ptr(ckv), c.ptr(kpe),
      kvType(c.type(ckv)), maxLen, cs[2], ukT.data(), uv.data(), dv, rows,
      c.I(pos), cfg.scale, c.F(s.results[0]), c.pool, kScales, scratch,
      c.cacheScale(ckv), c.cacheScale(kpe));
  return absl::OkStatus();
}

} // namespace ds::rt::cpu
