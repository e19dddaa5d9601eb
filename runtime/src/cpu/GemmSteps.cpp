//===- GemmSteps.cpp - linear, router and MoE experts ---------------------===//
//
// The GEMM steps and their fused prologues / epilogues. Their scratch (a
// normalized or quantized input copy, the rows a caller selected, a gated
// GEMM's wide result, router logits) is planned in the arena.
//
//===----------------------------------------------------------------------===//

#include "Steps.h"

#include "ds/rt/Kernels.h"
#include "ds/support/Quant.h"

#include <algorithm>
#include <functional>

namespace ds::rt::cpu {

namespace {

/// Quantize-dequantize rows of x in place as #ds.act_quant does.
void fakeQuant(float *x, int64_t rows, int64_t cols, const steps::ActQuant &q) {
  std::vector<int64_t> shape{rows, cols};
  ds::QScheme scheme;
  scheme.storage = static_cast<ds::QStorage>(q.storage);
  bool isStatic = q.scale > 0;
  scheme.block = {isStatic ? 0 : 1, q.group};
  ds::QuantizedTensor t =
      isStatic
          ? ds::quantizeWithScale(x, shape, scheme, static_cast<float>(q.scale))
          : ds::quantize(x, shape, scheme);
  std::vector<float> back = ds::dequantize(t);
  std::copy(back.begin(), back.end(), x);
}

} // namespace

//===----------------------------------------------------------------------===//
// Linear
//===----------------------------------------------------------------------===//

absl::Status checkLinear(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::Linear>();
  const kernels::PackedWeight &w = v.model.packed(s.weights[0])[0];
  int32_t x = s.operands[0], y = s.results[0];
  int64_t n = cfg.gated ? w.n / 2 : w.n;
  size_t wi = 1;
  if (v.last(x) != w.k || v.count(y) != v.rows(x) * n || (cfg.gated && w.n % 2))
    return v.bad("linear input, weight and output");
  if (cfg.bias && v.weightCount(s.weights[wi++]) != w.n)
    return v.bad("linear bias");
  if (cfg.norm && v.weightCount(s.weights[wi]) != w.k)
    return v.bad("linear norm weight");
  if (cfg.residual && v.count(s.operands[1]) != v.count(y))
    return v.bad("linear residual");
  return absl::OkStatus();
}

uint64_t scratchLinear(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::Linear>();
  const kernels::PackedWeight &w = v.model.packed(s.weights[0])[0];
  int64_t m = v.rows(s.operands[0]), k = w.k;
  // Selected rows (at most m), the prologue's input copy, the gated
  // GEMM's full-width result.
  uint64_t bytes = scratchFloats(m * k);
  if (cfg.norm || cfg.inputQuant.enabled())
    bytes += scratchFloats(m * k);
  if (cfg.gated)
    bytes += scratchFloats(m * w.n);
  return bytes;
}

namespace {
/// The precision the GEMM's input rows have (gemm's `inputs`): the input's
/// type, unless the prologue quantizes it.
kernels::Round linearInputs(const steps::Linear &cfg) {
  return cfg.inputQuant.enabled() ? kernels::Round::None
                                  : static_cast<kernels::Round>(cfg.inputRound);
}
} // namespace

ThreadScratchNeed threadScratchLinear(const ShapeView &v) {
  const kernels::PackedWeight &w = v.model.packed(v.step.weights[0])[0];
  // Up to the input's rows: a caller may ask for some rows only
  // (Args::selectRows, the logits of each sequence's last row), and fewer
  // rows can pick a tile with a wider slab.
  return kernels::gemmScratchUpTo(v.rows(v.step.operands[0]), w.k, w.format,
                                  linearInputs(v.step.as<steps::Linear>()));
}

absl::Status runLinear(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::Linear>();
  int32_t x = s.operands[0], y = s.results[0];
  auto inRound = static_cast<kernels::Round>(cfg.inputRound);
  auto outRound = static_cast<kernels::Round>(cfg.outputRound);
  kernels::PackedWeight w = c.model.packed(s.weights[0])[0];
  // W8A8 / W4A8: the GEMM quantizes its input (static scale if calibrated).
  if (w.format == kernels::WeightFormat::I8Dot ||
      w.format == kernels::WeightFormat::I4Dot)
    w.inputScale = static_cast<float>(cfg.inputQuant.scale);
  int64_t m = c.rows(x), k = c.shape(x).back();
  size_t wi = 1;
  const float *bias = cfg.bias ? c.weight(wi++) : nullptr;
  const float *in = c.F(x);
  if (c.args.selectRows && !cfg.residual) {
    // Only the wanted rows (row-wise norm and GEMM: each row's result is
    // the same as in the full product, bit for bit).
    const std::vector<int64_t> &rows = *c.args.selectRows;
    const int64_t count = static_cast<int64_t>(rows.size());
    float *picked = c.scratch(count * k);
    if (!picked)
      return c.error("scratch overflow (selected rows)");
    for (int64_t i = 0; i < count; ++i)
      std::copy_n(in + rows[i] * k, k, picked + i * k);
    in = picked;
    m = count;
    *c.args.rowsSelected = true;
  }
  if (cfg.norm || cfg.inputQuant.enabled()) {
    float *prologue = c.scratch(m * k);
    if (!prologue)
      return c.error("scratch overflow (input)");
    if (cfg.norm)
      kernels::rmsNorm(in, c.weight(wi), m, k, cfg.normEpsilon, prologue,
                       inRound);
    else
      std::copy_n(in, m * k, prologue);
    if (cfg.inputQuant.enabled())
      fakeQuant(prologue, m, k, cfg.inputQuant);
    in = prologue;
  }
  float *out = c.F(y);
  int64_t n = w.n;
  if (cfg.gated) {
    float *wide = c.scratch(m * n);
    if (!wide)
      return c.error("scratch overflow (gated result)");
    kernels::gemm(in, m, k, w, bias, wide, n, c.pool, linearInputs(cfg));
    kernels::roundValues(wide, m * n, outRound);
    kernels::glu(wide, m, n / 2, static_cast<kernels::Act>(cfg.activation),
                 out);
    n /= 2;
  } else {
    kernels::gemm(in, m, k, w, bias, out, n, c.pool, linearInputs(cfg));
    if (cfg.activation >= 0) {
      kernels::roundValues(out, m * n, outRound);
      for (int64_t i = 0; i < m * n; ++i)
        out[i] = kernels::activate(static_cast<kernels::Act>(cfg.activation),
                                   out[i]);
    }
  }
  if (cfg.residual) {
    kernels::roundValues(out, m * n, outRound);
    const float *r = c.F(s.operands[1]);
    for (int64_t i = 0; i < m * n; ++i)
      out[i] = r[i] + out[i];
  }
  kernels::roundValues(out, m * n, outRound);
  return absl::OkStatus();
}

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

absl::Status checkRouter(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::Router>();
  const kernels::PackedWeight &w = v.model.packed(s.weights[0])[0];
  int32_t x = s.operands[0];
  int64_t rows = v.rows(x);
  if (v.last(x) != w.k || w.n != cfg.numExperts ||
      v.count(s.results[0]) != rows * cfg.topK ||
      v.count(s.results[1]) != rows * cfg.topK ||
      (cfg.bias && v.weightCount(s.weights[1]) != cfg.numExperts))
    return v.bad("router input, weight or outputs");
  return absl::OkStatus();
}

uint64_t scratchRouter(const ShapeView &v) {
  const auto &cfg = v.step.as<steps::Router>();
  return scratchFloats(v.rows(v.step.operands[0]) * cfg.numExperts);
}

namespace {
kernels::RouterConfig routerConfig(const steps::Router &cfg) {
  kernels::RouterConfig rc;
  rc.numExperts = cfg.numExperts;
  rc.topK = cfg.topK;
  rc.sigmoid = cfg.sigmoid;
  rc.nGroup = cfg.nGroup;
  rc.topkGroup = cfg.topkGroup;
  rc.groupScoreMax = cfg.groupScoreMax;
  rc.normTopkProb = cfg.normTopkProb;
  rc.numKept = static_cast<int64_t>(cfg.kept.size());
  rc.kept = rc.numKept ? cfg.kept.data() : nullptr;
  rc.numSlots = static_cast<int64_t>(cfg.slots.size());
  rc.slots = rc.numSlots ? cfg.slots.data() : nullptr;
  rc.normEpsilon = cfg.normEpsilon;
  rc.scalingFactor = cfg.scalingFactor;
  return rc;
}
} // namespace

ThreadScratchNeed threadScratchRouter(const ShapeView &v) {
  const kernels::PackedWeight &w = v.model.packed(v.step.weights[0])[0];
  ThreadScratchNeed need =
      kernels::gemmScratch(v.rows(v.step.operands[0]), w.k, w.format);
  return need.atLeast(
      {kernels::routeScratchBytes(routerConfig(v.step.as<steps::Router>())),
       0});
}

absl::Status runRouter(StepContext &c) {
  const Step &s = c.step;
  int32_t x = s.operands[0];
  int64_t n = c.rows(x), h = c.shape(x).back();
  const auto &cfg = s.as<steps::Router>();
  kernels::RouterConfig rc = routerConfig(cfg);
  float *logits = c.scratch(n * rc.numExperts);
  if (!logits)
    return c.error("scratch overflow (router logits)");
  kernels::gemm(c.F(x), n, h, c.model.packed(s.weights[0])[0], nullptr, logits,
                rc.numExperts, c.pool);
  kernels::route(logits, cfg.bias ? c.weight(1) : nullptr, n, rc,
                 c.F(s.results[0]),
                 static_cast<int32_t *>(c.ptr(s.results[1])));
  return absl::OkStatus();
}

//===----------------------------------------------------------------------===//
// MoE
//===----------------------------------------------------------------------===//

absl::Status checkMoE(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::MoE>();
  const auto &gu = v.model.packed(s.weights[0]);
  const auto &down = v.model.packed(s.weights[1]);
  int32_t x = s.operands[0];
  int64_t h = v.last(x), rows = v.rows(x);
  int64_t topK = v.last(s.operands[2]);
  if (gu.empty() || gu.size() != down.size() || gu[0].k != h ||
      gu[0].n != 2 * cfg.intermediate || down[0].k != cfg.intermediate ||
      down[0].n != h ||
      (cfg.routedExperts > 0
           ? cfg.firstExpert >
                 cfg.routedExperts - static_cast<int64_t>(gu.size())
           : cfg.firstExpert != 0) ||
      v.count(s.operands[1]) != rows * topK ||
      v.count(s.operands[2]) != rows * topK ||
      v.count(s.results[0]) != rows * h)
    return v.bad("moe input, routing or expert weights");
  if (cfg.allToAll) {
    // The blocks are the group's along gridAxes: this process's is its
    // place in the group, and they make up every expert.
    const ModelPlan &plan = v.model.plan();
    const GridGroup g =
        plan.grid.empty() ? GridGroup{0, plan.process, plan.processes}
                          : gridGroupOf(plan.grid, cfg.gridAxes, plan.process);
    const int64_t local = static_cast<int64_t>(gu.size());
    if (cfg.routedExperts / local != g.size || cfg.routedExperts % local != 0 ||
        cfg.firstExpert != g.index * local)
      return v.bad("all-to-all moe blocks of experts and the process grid");
  }
  return absl::OkStatus();
}

namespace {
/// The received rows an all-to-all MoE step runs its experts over at a
/// time: as many as the group's tokens if every process had this one's.
int64_t allToAllChunk(const ShapeView &v) {
  const auto &cfg = v.step.as<steps::MoE>();
  const int64_t local =
      static_cast<int64_t>(v.model.packed(v.step.weights[0]).size());
  const int64_t procs = cfg.routedExperts / std::max<int64_t>(local, 1);
  return std::max<int64_t>(v.rows(v.step.operands[0]), 1) *
         std::max<int64_t>(procs, 1);
}
} // namespace

uint64_t scratchMoE(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::MoE>();
  int32_t x = s.operands[0];
  int64_t rows = v.rows(x), h = v.last(x), topK = v.last(s.operands[2]);
  int64_t experts = static_cast<int64_t>(v.model.packed(s.weights[0]).size());
  // All-to-all: the experts' tables and results for a chunk of received
  // rows (one slot each).
  if (cfg.allToAll)
    return kernels::moeExpertsScratchBytes(allToAllChunk(v), h, 1, experts,
                                           cfg.intermediate);
  // The quantized input copy, then the experts' dispatch tables and
  // intermediate results (kernels::moeExperts).
  return (cfg.inputQuant.enabled() ? scratchFloats(v.count(x)) : 0) +
         kernels::moeExpertsScratchBytes(rows, h, topK, experts,
                                         cfg.intermediate);
}

ThreadScratchNeed threadScratchMoE(const ShapeView &v) {
  const Step &s = v.step;
  const auto &cfg = s.as<steps::MoE>();
  int32_t x = s.operands[0];
  int64_t rows = cfg.allToAll ? allToAllChunk(v) : v.rows(x), h = v.last(x);
  // An expert gets each token at most once, so at most `rows` rows (an
  // all-to-all step runs its received rows in chunks of that many); experts
  // run side by side, each GEMM whole on one thread (its calling-thread
  // share on every thread), or one after another split over the workers.
  // Every expert's weights share one layout (checkMoE: the table is not
  // empty).
  const auto round = static_cast<kernels::Round>(cfg.inputRound);
  ThreadScratchNeed need;
  for (auto [w, k] : {std::pair{s.weights[0], h},
                      std::pair{s.weights[1], cfg.intermediate}}) {
    ThreadScratchNeed g = kernels::gemmScratchUpTo(
        rows, k, v.model.packed(w).front().format, round);
    need.atLeast(ThreadScratchNeed::everywhere(std::max(g.caller, g.worker)));
  }
  return need;
}

namespace {
/// A MoE step with `allToAll`: the local tokens' slots go to the processes
/// holding their experts and come back: one all-to-all of the row counts,
/// then one variable-count all-to-all of the rows each way (3 collective
/// calls over the group).
absl::Status runMoEAllToAll(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::MoE>();
  absl::StatusOr<Communicator *> group = communicatorFor(c, cfg.gridAxes);
  if (!group.ok())
    return group.status();
  Communicator &comm = **group;
  int32_t x = s.operands[0];
  const int64_t n = c.rows(x), h = c.shape(x).back();
  const int64_t topK = c.shape(s.operands[2]).back();
  const auto &gu = c.model.packed(s.weights[0]);
  const auto &down = c.model.packed(s.weights[1]);
  const int64_t local = static_cast<int64_t>(gu.size());
  const int64_t procs = comm.size();
  if (cfg.routedExperts != local * procs)
    return c.error(absl::StrCat(local, " experts on each of ", procs,
                                " processes are not the routing's ",
                                cfg.routedExperts));
  const float *in = c.F(x);
  const float *weights = c.F(s.operands[1]);
  const auto *indices = static_cast<const int32_t *>(c.ptr(s.operands[2]));
  const int64_t slots = n * topK;
  // Row counts travel as floats: exact below 2^24 rows.
  if (slots >= (int64_t{1} << 24))
    return c.error(absl::StrCat(slots, " slots in one all-to-all step, more "
                                       "than the 2^24 its counts can carry"));
  for (int64_t i = 0; i < slots; ++i)
    if (indices[i] < 0 || indices[i] >= cfg.routedExperts)
      return c.error(absl::StrCat("expert index ", indices[i],
                                  " is outside [0, ", cfg.routedExperts, ")"));
  // Rows by destination, each [expert there, x row], in slot order.
  std::vector<int64_t> sendCounts(procs, 0), start(procs + 1, 0);
  for (int64_t i = 0; i < slots; ++i)
    ++sendCounts[indices[i] / local];
  for (int64_t p = 0; p < procs; ++p)
    start[p + 1] = start[p] + sendCounts[p];
  std::vector<float> send(slots * (h + 1));
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < slots; ++i) {
    const int64_t p = indices[i] / local;
    float *row = &send[fill[p]++ * (h + 1)];
    row[0] = static_cast<float>(indices[i] % local);
    std::copy_n(in + (i / topK) * h, h, row + 1);
  }
  // How many rows each process sends here.
  std::vector<float> countsOut(sendCounts.begin(), sendCounts.end()),
      countsIn(procs);
  std::vector<int64_t> ones(procs, 1);
  if (absl::Status st =
          comm.allToAll(countsOut.data(), ones, countsIn.data(), ones, 1);
      !st.ok())
    return c.error(std::string(st.message()));
  std::vector<int64_t> recvCounts(procs);
  int64_t m = 0;
  for (int64_t p = 0; p < procs; ++p)
    m += recvCounts[p] = static_cast<int64_t>(countsIn[p]);
  std::vector<float> received(m * (h + 1));
  if (absl::Status st = comm.allToAll(send.data(), sendCounts, received.data(),
                                      recvCounts, h + 1);
      !st.ok())
    return c.error(std::string(st.message()));
  // This process's experts over the received rows, one slot each.
  std::vector<float> rows(m * h), ownWeights(m, 1.0f), outputs(m * h);
  std::vector<int32_t> expert(m);
  for (int64_t r = 0; r < m; ++r) {
    expert[r] = static_cast<int32_t>(received[r * (h + 1)]);
    std::copy_n(&received[r * (h + 1) + 1], h, &rows[r * h]);
  }
  if (cfg.inputQuant.enabled())
    fakeQuant(rows.data(), m, h, cfg.inputQuant);
  std::function<void(float *, int64_t, int64_t)> hidden;
  if (cfg.hiddenQuant.enabled())
    hidden = [&](float *r, int64_t count, int64_t cols) {
      fakeQuant(r, count, cols, cfg.hiddenQuant);
    };
  // In chunks of the rows the step's scratch was planned for: rows are
  // independent (one slot each), so chunks change no value.
  const int64_t chunk = std::max<int64_t>(n, 1) * procs;
  void *scratch = c.scratchBytes(
      kernels::moeExpertsScratchBytes(chunk, h, 1, local, cfg.intermediate));
  if (!scratch)
    return c.error("scratch overflow (experts)");
  for (int64_t r0 = 0; r0 < m; r0 += chunk) {
    const int64_t count = std::min(chunk, m - r0);
    int64_t bad = kernels::moeExperts(
        rows.data() + r0 * h, count, h, ownWeights.data() + r0,
        expert.data() + r0, 1, local, gu.data(), down.data(), cfg.intermediate,
        static_cast<kernels::Act>(cfg.activation), outputs.data() + r0 * h,
        c.pool, hidden, static_cast<kernels::Round>(cfg.inputRound), scratch);
    if (bad != -1)
      return c.error(absl::StrCat("received a row for expert ", bad,
                                  " of a block of ", local));
  }
  // The outputs go back the way the rows came.
  std::vector<float> back(slots * h);
  if (absl::Status st =
          comm.allToAll(outputs.data(), recvCounts, back.data(), sendCounts, h);
      !st.ok())
    return c.error(std::string(st.message()));
  std::vector<float> bySlot(slots * h);
  std::copy(start.begin(), start.end() - 1, fill.begin());
  for (int64_t i = 0; i < slots; ++i)
    std::copy_n(&back[fill[indices[i] / local]++ * h], h, &bySlot[i * h]);
  float *y = c.F(s.results[0]);
  kernels::moeCombine(bySlot.data(), n, h, weights, indices, topK, y);
  kernels::roundValues(y, n * h, static_cast<kernels::Round>(cfg.outputRound));
  return absl::OkStatus();
}
} // namespace

absl::Status runMoE(StepContext &c) {
  const Step &s = c.step;
  const auto &cfg = s.as<steps::MoE>();
  if (cfg.allToAll)
    return runMoEAllToAll(c);
  int32_t x = s.operands[0], wts = s.operands[1], idx = s.operands[2];
  int64_t n = c.rows(x), h = c.shape(x).back();
  int64_t topK = c.shape(idx).back();
  const auto &gu = c.model.packed(s.weights[0]);
  const auto &down = c.model.packed(s.weights[1]);
  const float *in = c.F(x);
  void *experts = nullptr;
  if (cfg.inputQuant.enabled()) {
    float *quantized = c.scratch(n * h);
    if (!quantized)
      return c.error("scratch overflow (quantized input)");
    std::copy_n(in, n * h, quantized);
    fakeQuant(quantized, n, h, cfg.inputQuant);
    in = quantized;
  }
  // The kernel's scratch follows (64-byte aligned, as planned).
  uint64_t expertBytes = kernels::moeExpertsScratchBytes(
      n, h, topK, static_cast<int64_t>(gu.size()), cfg.intermediate);
  experts = c.scratchBytes(expertBytes);
  if (!experts)
    return c.error("scratch overflow (experts)");
  std::function<void(float *, int64_t, int64_t)> hidden;
  if (cfg.hiddenQuant.enabled())
    hidden = [&](float *rows, int64_t count, int64_t cols) {
      fakeQuant(rows, count, cols, cfg.hiddenQuant);
    };
  int64_t bad = kernels::moeExperts(
      in, n, h, c.F(wts), static_cast<const int32_t *>(c.ptr(idx)), topK,
      static_cast<int64_t>(gu.size()), gu.data(), down.data(), cfg.intermediate,
      static_cast<kernels::Act>(cfg.activation), c.F(s.results[0]), c.pool,
      hidden, static_cast<kernels::Round>(cfg.inputRound), experts,
      kernels::ExpertBlock{cfg.firstExpert, cfg.routedExperts});
  if (bad != -1)
    return c.error(absl::StrCat("expert index ", bad, " is outside [0, ",
                                cfg.routedExperts > 0
                                    ? cfg.routedExperts
                                    : static_cast<int64_t>(gu.size()),
                                ")"));
  kernels::roundValues(c.F(s.results[0]), n * h,
                       static_cast<kernels::Round>(cfg.outputRound));
  return absl::OkStatus();
}

} // namespace ds::rt::cpu
