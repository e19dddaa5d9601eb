//===- Plan.cpp - plan (de)serialization and artifact writing -------------===//
//
// The header is JSON (nlohmann::json) so an artifact can be inspected with
// any JSON tool; parsing checks every id and size before the runtime trusts
// it.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Plan.h"
#include "ds/rt/Device.h"

#include "ds/support/FileSpool.h"
#include "ds/support/KVScale.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <optional>
#include <unistd.h>
#include <vector>

namespace ds::rt {

const char *weightLayoutName(WeightLayout layout) {
  switch (layout) {
  case WeightLayout::Raw:
    return "raw";
  case WeightLayout::PackedF32:
    return "packed-f32";
  case WeightLayout::PackedI8:
    return "packed-int8";
  case WeightLayout::PackedI4:
    return "packed-int4";
  case WeightLayout::PackedF8:
    return "packed-fp8";
  case WeightLayout::PackedI8Dot:
    return "packed-int8-vnni";
  case WeightLayout::PackedS24:
    return "packed-2:4";
  case WeightLayout::PackedBF16:
    return "packed-bf16";
  case WeightLayout::PackedF16:
    return "packed-f16";
  case WeightLayout::PackedI4H:
    return "packed-int4-f16-scales";
  case WeightLayout::PackedI4Dot:
    return "packed-int4-vnni";
  }
  return "unknown";
}
using json = nlohmann::json;

size_t elemSize(ElemType t) {
  switch (t) {
  case ElemType::F32:
  case ElemType::I32:
    return 4;
  case ElemType::I64:
    return 8;
  case ElemType::BF16:
  case ElemType::F16:
    return 2;
  case ElemType::F8E4M3:
    return 1;
  }
  return 4;
}

const char *elemTypeName(ElemType t) {
  switch (t) {
  case ElemType::F32:
    return "f32";
  case ElemType::I64:
    return "i64";
  case ElemType::I32:
    return "i32";
  case ElemType::BF16:
    return "bf16";
  case ElemType::F16:
    return "f16";
  case ElemType::F8E4M3:
    return "f8e4m3";
  }
  return "unknown";
}

bool validCacheScale(ElemType t, double scale) {
  if (t != ElemType::F8E4M3)
    return scale == 1.0;
  return ds::isPowerOfTwoScale(scale);
}

uint64_t fnv1a(const void *data, size_t size, uint64_t seed) {
  // Eight bytes a round (FNV-1a over 64-bit words, then the tail): several
  // GB/s, enough to check weights at load time.
  const auto *p = static_cast<const unsigned char *>(data);
  uint64_t h = seed;
  size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
  }
  for (; i < size; ++i)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

const FunctionPlan *ModelPlan::find(const std::string &name) const {
  for (const FunctionPlan &f : functions)
    if (f.name == name)
      return &f;
  return nullptr;
}

const char *opName(OpCode op) {
  switch (op) {
  case OpCode::Embedding:
    return "embedding";
  case OpCode::RMSNorm:
    return "rms_norm";
  case OpCode::Linear:
    return "linear";
  case OpCode::Copy:
    return "split";
  case OpCode::Rope:
    return "rope";
  case OpCode::CacheUpdate:
    return "cache_update";
  case OpCode::Attention:
    return "attention";
  case OpCode::MLAAttention:
    return "mla_attention";
  case OpCode::Router:
    return "router";
  case OpCode::MoE:
    return "moe";
  case OpCode::Elementwise:
    return "elementwise";
  case OpCode::Alias:
    return "alias";
  case OpCode::Generated:
    return "generated";
  case OpCode::AllReduce:
    return "all_reduce";
  case OpCode::AllGather:
    return "all_gather";
  case OpCode::Send:
    return "send";
  case OpCode::Recv:
    return "recv";
  }
  return "unknown";
}

namespace {

//===----------------------------------------------------------------------===//
// Step configurations: the one encoder
//===----------------------------------------------------------------------===//

json actQuantToJson(const steps::ActQuant &q) {
  return {{"storage", q.storage}, {"group", q.group}, {"scale", q.scale}};
}

struct ConfigEncoder {
  json operator()(const steps::Embedding &c) const {
    return {{"first_row", c.firstRow}, {"vocab", c.vocab}};
  }
  json operator()(const steps::RMSNorm &c) const {
    return {{"epsilon", c.epsilon}};
  }
  json operator()(const steps::Linear &c) const {
    return {{"norm", c.norm},
            {"bias", c.bias},
            {"gated", c.gated},
            {"residual", c.residual},
            {"activation", c.activation},
            {"norm_epsilon", c.normEpsilon},
            {"input_quant", actQuantToJson(c.inputQuant)},
            {"input_round", c.inputRound},
            {"output_round", c.outputRound}};
  }
  json operator()(const steps::Copy &c) const {
    return {{"axis", c.axis}, {"sizes", c.sizes}};
  }
  json operator()(const steps::Rope &c) const {
    return {{"rotary_dim", c.rotaryDim},
            {"style", c.style},
            {"attention_scaling", c.attentionScaling},
            {"inv_freq", c.invFreq}};
  }
  json operator()(const steps::CacheUpdate &) const { return json::object(); }
  json operator()(const steps::Attention &c) const {
    return {{"sliding_window", c.slidingWindow},
            {"cached", c.cached},
            {"scale", c.scale}};
  }
  json operator()(const steps::MLAAttention &c) const {
    return {{"cached", c.cached}, {"scale", c.scale}};
  }
  json operator()(const steps::Router &c) const {
    return {{"num_experts", c.numExperts},
            {"top_k", c.topK},
            {"n_group", c.nGroup},
            {"topk_group", c.topkGroup},
            {"sigmoid", c.sigmoid},
            {"group_score_max", c.groupScoreMax},
            {"norm_topk_prob", c.normTopkProb},
            {"bias", c.bias},
            {"kept", c.kept},
            {"slots", c.slots},
            {"norm_epsilon", c.normEpsilon},
            {"scaling_factor", c.scalingFactor}};
  }
  json operator()(const steps::MoE &c) const {
    return {{"intermediate", c.intermediate},
            {"activation", c.activation},
            {"input_quant", actQuantToJson(c.inputQuant)},
            {"hidden_quant", actQuantToJson(c.hiddenQuant)},
            {"input_round", c.inputRound},
            {"output_round", c.outputRound},
            {"first_expert", c.firstExpert},
            {"routed_experts", c.routedExperts},
            {"all_to_all", c.allToAll},
            {"grid_axes", c.gridAxes}};
  }
  json operator()(const steps::Elementwise &c) const {
    return {{"broadcast", c.broadcast}};
  }
  json operator()(const steps::Alias &) const { return json::object(); }
  json operator()(const steps::Generated &c) const {
    return {{"kind", c.kind}, {"epsilon", c.epsilon}};
  }
  json operator()(const steps::AllReduce &c) const {
    return {{"grid_axes", c.gridAxes}};
  }
  json operator()(const steps::AllGather &c) const {
    return {{"axis", c.axis}, {"grid_axes", c.gridAxes}};
  }
  json operator()(const steps::Send &c) const {
    return {{"grid_axes", c.gridAxes}, {"peer", c.peer}};
  }
  json operator()(const steps::Recv &c) const {
    return {{"grid_axes", c.gridAxes}, {"peer", c.peer}};
  }
};

} // namespace

namespace {
json dimToJson(const DimExpr &d) {
  json f = json::array();
  for (auto [v, a] : d.factors)
    f.push_back({v, a});
  return {{"c", d.constant}, {"f", f}};
}
} // namespace

std::string planToJson(const ModelPlan &plan, const TargetInfo &target,
                       const std::string &extraJson) {
  json j;
  j["format_version"] = kArtifactFormatVersion;
  j["arch"] = plan.arch;
  j["vocab_size"] = plan.vocabSize;
  j["max_cache_len"] = plan.maxCacheLen;
  j["eos_token_ids"] = plan.eosTokenIds;
  j["build_key"] = plan.buildKey;
  j["processes"] = plan.processes;
  j["process"] = plan.process;
  j["grid"] = plan.grid;
  j["batch_axes"] = plan.batchAxes;
  j["pipeline_axis"] = plan.pipelineAxis;
  j["target"] = {{"triple", target.triple},
                 {"cpu", target.cpu},
                 {"features", target.features},
                 {"required_isa", target.requiredIsa}};
  json caches = json::array();
  for (const CacheInfo &c : plan.caches)
    caches.push_back({{"name", c.name},
                      {"row_shape", c.rowShape},
                      {"type", static_cast<uint32_t>(c.type)},
                      {"scale", c.scale}});
  j["caches"] = caches;
  json weights = json::array();
  for (const WeightInfo &w : plan.weights)
    weights.push_back({{"name", w.name},
                       {"layout", static_cast<uint32_t>(w.layout)},
                       {"type", static_cast<uint32_t>(w.type)},
                       {"shape", w.shape},
                       {"offset", w.offset},
                       {"bytes", w.bytes},
                       {"group", w.group}});
  j["weights"] = weights;
  json fns = json::array();
  for (const FunctionPlan &f : plan.functions) {
    json values = json::array();
    for (const ValueInfo &v : f.values) {
      json shape = json::array();
      for (const DimExpr &d : v.shape)
        shape.push_back(dimToJson(d));
      values.push_back({{"kind", static_cast<uint32_t>(v.kind)},
                        {"type", static_cast<uint32_t>(v.type)},
                        {"shape", shape},
                        {"index", v.index}});
    }
    json steps = json::array();
    for (const Step &s : f.steps)
      steps.push_back({{"op", opName(s.op())},
                       {"operands", s.operands},
                       {"results", s.results},
                       {"weights", s.weights},
                       {"config", std::visit(ConfigEncoder{}, s.config)},
                       {"kernel", s.kernel},
                       {"loc", s.location}});
    fns.push_back({{"name", f.name},
                   {"values", values},
                   {"inputs", f.inputs},
                   {"outputs", f.outputs},
                   {"steps", steps}});
  }
  j["functions"] = fns;
  json extra = json::parse(extraJson, nullptr, /*allow_exceptions=*/false);
  j["extra"] = extra.is_discarded() ? json::object() : extra;
  return j.dump();
}

namespace {
/// Reads JSON without exceptions: every accessor checks the kind first and
/// records the first problem.
struct Reader {
  std::string error;
  bool ok() const { return error.empty(); }
  void fail(const std::string &what) {
    if (error.empty())
      error = what;
  }
  const json &field(const json &o, const char *key) {
    static const json null;
    if (!o.is_object() || !o.contains(key)) {
      fail(absl::StrCat("missing field '", key, "'"));
      return null;
    }
    return o[key];
  }
  int64_t integer(const json &o, const char *key) {
    const json &v = field(o, key);
    if (!v.is_number_integer()) {
      fail(absl::StrCat("field '", key, "' is not an integer"));
      return 0;
    }
    return v.get<int64_t>();
  }
  double number(const json &o, const char *key) {
    const json &v = field(o, key);
    if (!v.is_number()) {
      fail(absl::StrCat("field '", key, "' is not a number"));
      return 0;
    }
    return v.get<double>();
  }
  bool boolean(const json &o, const char *key) {
    const json &v = field(o, key);
    if (!v.is_boolean()) {
      fail(absl::StrCat("field '", key, "' is not true or false"));
      return false;
    }
    return v.get<bool>();
  }
  std::string string(const json &o, const char *key) {
    const json &v = field(o, key);
    if (!v.is_string()) {
      fail(absl::StrCat("field '", key, "' is not a string"));
      return {};
    }
    return v.get<std::string>();
  }
  template <typename T> std::vector<T> list(const json &o, const char *key) {
    const json &v = field(o, key);
    std::vector<T> out;
    if (!v.is_array()) {
      fail(absl::StrCat("field '", key, "' is not an array"));
      return out;
    }
    for (const json &e : v) {
      bool good =
          std::is_floating_point_v<T> ? e.is_number() : e.is_number_integer();
      if (!good) {
        fail(absl::StrCat("field '", key, "' has a non-number entry"));
        return {};
      }
      out.push_back(e.get<T>());
    }
    return out;
  }
  const json &array(const json &o, const char *key) {
    const json &v = field(o, key);
    if (!v.is_array())
      fail(absl::StrCat("field '", key, "' is not an array"));
    return v;
  }
};
} // namespace

namespace {

//===----------------------------------------------------------------------===//
// Step configurations: the one decoder
//===----------------------------------------------------------------------===//

steps::ActQuant actQuantFromJson(Reader &r, const json &o, const char *key) {
  steps::ActQuant q;
  const json &j = r.field(o, key);
  if (!r.ok())
    return q;
  q.storage = static_cast<int32_t>(r.integer(j, "storage"));
  q.group = r.integer(j, "group");
  q.scale = r.number(j, "scale");
  return q;
}

/// The configuration of a step named `op` from its "config" object.
std::optional<StepConfig> configFromJson(Reader &r, const std::string &op,
                                         const json &c) {
  auto i32 = [&](const char *key) {
    return static_cast<int32_t>(r.integer(c, key));
  };
  if (op == "embedding")
    return steps::Embedding{r.integer(c, "first_row"), r.integer(c, "vocab")};
  if (op == "rms_norm")
    return steps::RMSNorm{r.number(c, "epsilon")};
  if (op == "linear") {
    steps::Linear l;
    l.norm = r.boolean(c, "norm");
    l.bias = r.boolean(c, "bias");
    l.gated = r.boolean(c, "gated");
    l.residual = r.boolean(c, "residual");
    l.activation = i32("activation");
    l.normEpsilon = r.number(c, "norm_epsilon");
    l.inputQuant = actQuantFromJson(r, c, "input_quant");
    l.inputRound = i32("input_round");
    l.outputRound = i32("output_round");
    return l;
  }
  if (op == "split")
    return steps::Copy{r.integer(c, "axis"), r.list<int64_t>(c, "sizes")};
  if (op == "rope") {
    steps::Rope p;
    p.rotaryDim = r.integer(c, "rotary_dim");
    p.style = i32("style");
    p.attentionScaling = r.number(c, "attention_scaling");
    p.invFreq = r.list<double>(c, "inv_freq");
    return p;
  }
  if (op == "cache_update")
    return steps::CacheUpdate{};
  if (op == "attention")
    return steps::Attention{r.integer(c, "sliding_window"),
                            r.boolean(c, "cached"), r.number(c, "scale")};
  if (op == "mla_attention")
    return steps::MLAAttention{r.boolean(c, "cached"), r.number(c, "scale")};
  if (op == "router") {
    steps::Router t;
    t.numExperts = r.integer(c, "num_experts");
    t.topK = r.integer(c, "top_k");
    t.nGroup = r.integer(c, "n_group");
    t.topkGroup = r.integer(c, "topk_group");
    t.sigmoid = r.boolean(c, "sigmoid");
    t.groupScoreMax = r.boolean(c, "group_score_max");
    t.normTopkProb = r.boolean(c, "norm_topk_prob");
    t.bias = r.boolean(c, "bias");
    t.kept = r.list<int64_t>(c, "kept");
    t.slots = r.list<int64_t>(c, "slots");
    t.normEpsilon = r.number(c, "norm_epsilon");
    t.scalingFactor = r.number(c, "scaling_factor");
    return t;
  }
  if (op == "moe") {
    steps::MoE m;
    m.intermediate = r.integer(c, "intermediate");
    m.activation = i32("activation");
    m.inputQuant = actQuantFromJson(r, c, "input_quant");
    m.hiddenQuant = actQuantFromJson(r, c, "hidden_quant");
    m.inputRound = i32("input_round");
    m.outputRound = i32("output_round");
    m.firstExpert = r.integer(c, "first_expert");
    m.routedExperts = r.integer(c, "routed_experts");
    m.allToAll = r.boolean(c, "all_to_all");
    m.gridAxes = r.list<int64_t>(c, "grid_axes");
    return m;
  }
  if (op == "elementwise") {
    steps::Elementwise e;
    for (int64_t f : r.list<int64_t>(c, "broadcast"))
      e.broadcast.push_back(f != 0);
    return e;
  }
  if (op == "alias")
    return steps::Alias{};
  if (op == "generated")
    return steps::Generated{i32("kind"), r.number(c, "epsilon")};
  if (op == "all_reduce")
    return steps::AllReduce{r.list<int64_t>(c, "grid_axes")};
  if (op == "all_gather")
    return steps::AllGather{r.integer(c, "axis"),
                            r.list<int64_t>(c, "grid_axes")};
  if (op == "send")
    return steps::Send{r.list<int64_t>(c, "grid_axes"), r.integer(c, "peer")};
  if (op == "recv")
    return steps::Recv{r.list<int64_t>(c, "grid_axes"), r.integer(c, "peer")};
  return std::nullopt;
}

} // namespace

namespace {
/// Each step's operand, result and weight counts, its configuration's
/// ranges, and the layouts of the weights it reads, as the executor expects
/// them.
bool isNarrow(ElemType t) {
  return t == ElemType::BF16 || t == ElemType::F16 || t == ElemType::F8E4M3;
}

/// Narrow (bf16 / f16 / e4m3) buffers reach only the kernels that read them: a
/// cache update's cache and result, the keys and values of a cached
/// attention, the latents of a cached MLA, an alias of a cache.
/// "loc: " to start a message about step s (nothing without a location).
std::string where(const Step &s) {
  return s.location.empty() ? "" : s.location + ": ";
}

absl::Status checkStepTypes(const FunctionPlan &f, const Step &s) {
  const std::string at = where(s);
  auto type = [&](int32_t id) { return f.values[id].type; };
  std::vector<bool> narrowOk(s.operands.size(), false);
  bool resultOk = false;
  switch (s.op()) {
  case OpCode::CacheUpdate:
    narrowOk[0] = resultOk = true;
    if (type(s.results[0]) != type(s.operands[0]))
      return absl::DataLossError(at + "a cache update's result is not of its "
                                      "cache's type");
    break;
  case OpCode::Attention:
    if (s.as<steps::Attention>().cached)
      narrowOk[1] = narrowOk[2] = true;
    if (type(s.operands[1]) != type(s.operands[2]))
      return absl::DataLossError(at +
                                 "attention keys and values differ in type");
    break;
  case OpCode::MLAAttention:
    if (s.as<steps::MLAAttention>().cached)
      narrowOk[2] = narrowOk[3] = true;
    if (type(s.operands[2]) != type(s.operands[3]))
      return absl::DataLossError(at +
                                 "MLA latents and rope keys differ in type");
    break;
  case OpCode::Alias:
    narrowOk[0] = resultOk = true;
    break;
  case OpCode::Send:
  case OpCode::Recv: {
    // The kernels move floats.
    int32_t v = s.op() == OpCode::Send ? s.operands[0] : s.results[0];
    if (type(v) != ElemType::F32)
      return absl::DataLossError(at + opName(s.op()) +
                                 " of a value that is "
                                 "not f32");
    break;
  }
  default:
    break;
  }
  for (size_t i = 0; i < s.operands.size(); ++i)
    if (isNarrow(type(s.operands[i])) && !narrowOk[i])
      return absl::DataLossError(at + opName(s.op()) +
                                 " reads a bf16 / f16 / e4m3 value it cannot "
                                 "read");
  for (int32_t id : s.results)
    if (isNarrow(type(id)) && !resultOk)
      return absl::DataLossError(at + opName(s.op()) +
                                 " writes a bf16 / f16 / e4m3 value");
  return absl::OkStatus();
}

absl::Status checkStep(const ModelPlan &plan, const Step &s) {
  auto need = [&](bool ok, const char *what) {
    return ok ? absl::OkStatus()
              : absl::DataLossError(where(s) + "malformed " + opName(s.op()) +
                                    " step (" + what + ")");
  };
  size_t o = s.operands.size(), r = s.results.size(), w = s.weights.size();
  auto layout = [&](size_t i) {
    int32_t id = s.weights[i];
    return id >= 0 && id < static_cast<int32_t>(plan.weights.size())
               ? plan.weights[id].layout
               : WeightLayout::Raw;
  };
  auto rawF32 = [&](size_t i, size_t rank) {
    int32_t id = s.weights[i];
    if (id < 0 || id >= static_cast<int32_t>(plan.weights.size()))
      return false;
    const WeightInfo &info = plan.weights[id];
    return info.layout == WeightLayout::Raw && info.type == ElemType::F32 &&
           (rank == 0 || info.shape.size() == rank);
  };
  auto packed = [&](size_t i) { return layout(i) != WeightLayout::Raw; };
  // kernels::Round: 0, 1 = bf16, 2 = f16; kernels::Act: 0..4;
  // ds::QStorage: 0..4.
  auto round = [](int32_t v) { return v >= 0 && v <= 2; };
  auto act = [](int32_t v) { return v >= 0 && v <= 4; };
  // Axes of the plan's grid, ascending.
  auto gridAxesOk = [&](const std::vector<int64_t> &axes) {
    const int64_t rank =
        plan.grid.empty() ? 1 : static_cast<int64_t>(plan.grid.size());
    for (size_t i = 0; i < axes.size(); ++i)
      if (axes[i] < 0 || axes[i] >= rank || (i > 0 && axes[i] <= axes[i - 1]))
        return false;
    return true;
  };
  auto quant = [](const steps::ActQuant &q) {
    return q.storage >= -1 && q.storage <= 4 && q.group >= 0 &&
           std::isfinite(q.scale) && q.scale >= 0;
  };
  switch (s.op()) {
  case OpCode::Embedding:
    return need(o == 1 && r == 1 && w == 1 && rawF32(0, 2) &&
                    s.as<steps::Embedding>().firstRow >= 0 &&
                    s.as<steps::Embedding>().vocab >= 0,
                "operands or vocabulary block");
  case OpCode::RMSNorm:
    return need(o == 1 && r == 1 && w == 1 && rawF32(0, 1), "operands");
  case OpCode::Linear: {
    const auto &c = s.as<steps::Linear>();
    if (!(w >= 1 && packed(0)))
      return need(false, "weight");
    size_t extra = 1 + (c.bias ? 1 : 0) + (c.norm ? 1 : 0);
    bool ok = w == extra && o == (c.residual ? 2u : 1u) && r == 1;
    for (size_t i = 1; ok && i < w; ++i)
      ok = rawF32(i, 1);
    if (!ok)
      return need(false, "operands");
    return need((c.activation == -1 || act(c.activation)) &&
                    round(c.inputRound) && round(c.outputRound) &&
                    quant(c.inputQuant) && !(c.gated && c.activation < 0),
                "configuration");
  }
  case OpCode::Copy: {
    const auto &c = s.as<steps::Copy>();
    return need(o == 1 && r >= 1 && c.sizes.size() == r && c.axis >= 0,
                "pieces");
  }
  case OpCode::Rope: {
    const auto &c = s.as<steps::Rope>();
    return need(o == 2 && r == 1 && c.rotaryDim >= 0 && c.rotaryDim % 2 == 0 &&
                    c.invFreq.size() == static_cast<size_t>(c.rotaryDim / 2) &&
                    c.style >= 0 && c.style <= 2,
                "dims or style");
  }
  case OpCode::CacheUpdate:
    return need(o == 3 && r == 1, "operands");
  case OpCode::Attention:
    return need(o == 4 && r == 1 && s.as<steps::Attention>().slidingWindow >= 0,
                "operands");
  case OpCode::MLAAttention:
    // Optional third weight: per-K factors of an int8 W_uk^T [heads, dn].
    return need(o == 5 && r == 1 && (w == 2 || (w == 3 && rawF32(2, 2))) &&
                    packed(0) && packed(1),
                "operands");
  case OpCode::Router: {
    const auto &c = s.as<steps::Router>();
    if (!(o == 1 && r == 2 && w == (c.bias ? 2u : 1u) && packed(0) &&
          (w == 1 || rawF32(1, 1))))
      return need(false, "operands");
    // What the router kernel indexes with: kept experts ascending within
    // the scored ones, at least top_k of them, and every one in a slot.
    bool keptOk = c.numExperts > 0;
    for (size_t i = 0; i < c.kept.size(); ++i)
      keptOk &= c.kept[i] >= 0 && c.kept[i] < c.numExperts &&
                (i == 0 || c.kept[i] > c.kept[i - 1]);
    const int64_t selectable =
        c.kept.empty() ? c.numExperts : static_cast<int64_t>(c.kept.size());
    if (keptOk && !c.slots.empty()) {
      // Every expert needs a slot, so there are at least as many slots:
      // what bounds the table below by the artifact's own size.
      keptOk = static_cast<int64_t>(c.slots.size()) >= selectable;
      std::vector<bool> placed(keptOk ? selectable : 0, false);
      for (int64_t e : c.slots)
        if ((keptOk &= e >= 0 && e < selectable))
          placed[e] = true;
      keptOk &= std::find(placed.begin(), placed.end(), false) == placed.end();
    }
    const bool groupsOk = c.nGroup > 0 && c.numExperts % c.nGroup == 0 &&
                          c.topkGroup > 0 && c.topkGroup <= c.nGroup;
    return need(keptOk && groupsOk && c.topK > 0 && c.topK <= selectable &&
                    c.topK <= c.topkGroup * (c.numExperts / c.nGroup),
                "routing");
  }
  case OpCode::MoE: {
    const auto &c = s.as<steps::MoE>();
    return need(
        o == 3 && r == 1 && w == 2 && packed(0) && packed(1) &&
            c.intermediate > 0 && act(c.activation) && quant(c.inputQuant) &&
            quant(c.hiddenQuant) && round(c.inputRound) &&
            round(c.outputRound) && c.firstExpert >= 0 &&
            c.routedExperts >= 0 &&
            (!c.allToAll || (c.routedExperts > 0 && !c.gridAxes.empty() &&
                             gridAxesOk(c.gridAxes))),
        "operands or configuration");
  }
  case OpCode::Elementwise:
    return need(o >= 1 && r == 1 && !s.kernel.empty(), "operands");
  case OpCode::Generated:
    return need(!s.kernel.empty() &&
                    s.as<steps::Generated>().kind ==
                        steps::Generated::RMSNorm &&
                    o == 1 && w == 1 && r == 1 && rawF32(0, 1),
                "generated kernel");
  case OpCode::Alias:
    return need(o == 1 && r == 1, "operands");
  case OpCode::AllReduce:
    return need(o == 1 && r == 1 && w == 0 &&
                    gridAxesOk(s.as<steps::AllReduce>().gridAxes),
                "operands or grid axes");
  case OpCode::AllGather:
    return need(o == 1 && r == 1 && w == 0 &&
                    s.as<steps::AllGather>().axis >= 0 &&
                    gridAxesOk(s.as<steps::AllGather>().gridAxes),
                "operands, axis or grid axes");
  case OpCode::Send:
  case OpCode::Recv: {
    const auto &axes = s.op() == OpCode::Send ? s.as<steps::Send>().gridAxes
                                              : s.as<steps::Recv>().gridAxes;
    const int64_t peer = s.op() == OpCode::Send ? s.as<steps::Send>().peer
                                                : s.as<steps::Recv>().peer;
    // Along the pipeline axis, to the next stage / from the previous.
    const bool send = s.op() == OpCode::Send;
    const bool alongPipeline = plan.pipelineAxis >= 0 && axes.size() == 1 &&
                               axes[0] == plan.pipelineAxis;
    const int64_t stage =
        alongPipeline ? gridGroupOf(plan.grid, axes, plan.process).index : 0;
    return need(o == (send ? 1 : 0) && r == (send ? 0 : 1) && w == 0 &&
                    alongPipeline && peer == stage + (send ? 1 : -1) &&
                    peer >= 0 && peer < plan.grid[plan.pipelineAxis],
                "operands, grid axes or peer (the next stage for a send, "
                "the previous for a receive)");
  }
  }
  return need(false, "unknown op");
}
} // namespace

absl::StatusOr<ModelPlan> planFromJson(const std::string &text,
                                       TargetInfo *target) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::DataLossError("artifact header is not valid JSON");
  Reader r;
  ModelPlan plan;
  // The version first: another version's fields may mean other things.
  if (!j.contains("format_version"))
    return absl::FailedPreconditionError(absl::StrCat(
        "the artifact has no format version (written before version 2); "
        "this runtime reads version ",
        kArtifactFormatVersion, ": compile it again with ds-compile"));
  if (!j["format_version"].is_number_integer() ||
      j["format_version"].get<int64_t>() != kArtifactFormatVersion)
    return absl::FailedPreconditionError(absl::StrCat(
        "the artifact's format version is ", j["format_version"].dump(),
        "; this runtime reads version ", kArtifactFormatVersion,
        ": compile it again with ds-compile"));
  plan.arch = r.string(j, "arch");
  plan.vocabSize = r.integer(j, "vocab_size");
  plan.maxCacheLen = r.integer(j, "max_cache_len");
  if (j.contains("eos_token_ids"))
    plan.eosTokenIds = r.list<int64_t>(j, "eos_token_ids");
  if (j.contains("build_key"))
    plan.buildKey = r.string(j, "build_key");
  plan.processes = r.integer(j, "processes");
  plan.process = r.integer(j, "process");
  plan.grid = r.list<int64_t>(j, "grid");
  plan.batchAxes = r.list<int64_t>(j, "batch_axes");
  plan.pipelineAxis = r.integer(j, "pipeline_axis");
  if (plan.processes < 1 || plan.process < 0 || plan.process >= plan.processes)
    return absl::DataLossError(absl::StrCat("artifact header: process ",
                                            plan.process, " of ",
                                            plan.processes, " processes"));
  if (plan.grid.size() > kMaxGridAxes)
    return absl::DataLossError(
        absl::StrCat("artifact header: a process grid of ", plan.grid.size(),
                     " axes (at most ", kMaxGridAxes, ")"));
  if (!plan.grid.empty()) {
    // Its product is the processes, computed without overflow.
    int64_t product = 1;
    bool ok = true;
    for (int64_t d : plan.grid) {
      ok &= d > 0 && product <= plan.processes / d;
      if (!ok)
        break;
      product *= d;
    }
    if (!ok || product != plan.processes)
      return absl::DataLossError(absl::StrCat(
          "artifact header: the process grid [", absl::StrJoin(plan.grid, ", "),
          "] is not a grid of ", plan.processes, " processes"));
  }
  for (size_t i = 0; i < plan.batchAxes.size(); ++i)
    if (plan.batchAxes[i] < 0 ||
        plan.batchAxes[i] >= static_cast<int64_t>(plan.grid.size()) ||
        (i > 0 && plan.batchAxes[i] <= plan.batchAxes[i - 1]))
      return absl::DataLossError(
          absl::StrCat("artifact header: the batch axes [",
                       absl::StrJoin(plan.batchAxes, ", "),
                       "] are not ascending axes of the process grid [",
                       absl::StrJoin(plan.grid, ", "), "]"));
  if (plan.pipelineAxis < -1 ||
      plan.pipelineAxis >= static_cast<int64_t>(plan.grid.size()))
    return absl::DataLossError(
        absl::StrCat("artifact header: the pipeline axis ", plan.pipelineAxis,
                     " is not an axis of the process grid [",
                     absl::StrJoin(plan.grid, ", "), "]"));
  for (int64_t id : plan.eosTokenIds)
    if (id < 0 || (plan.vocabSize > 0 && id >= plan.vocabSize))
      r.fail(absl::StrCat("eos token id ", id, " is outside the vocabulary"));
  const json &t = r.field(j, "target");
  if (target && r.ok()) {
    target->triple = r.string(t, "triple");
    target->cpu = r.string(t, "cpu");
    target->features = r.string(t, "features");
    target->requiredIsa.clear();
    for (const json &f : r.array(t, "required_isa")) {
      if (!f.is_string()) {
        r.fail("target field 'required_isa' has a non-string entry");
        break;
      }
      target->requiredIsa.push_back(f.get<std::string>());
    }
  }
  if (r.ok())
    for (const json &c : r.array(j, "caches")) {
      CacheInfo info{r.string(c, "name"), r.list<int64_t>(c, "row_shape")};
      int64_t type = r.integer(c, "type");
      if (r.ok() && type != static_cast<int64_t>(ElemType::F32) &&
          type != static_cast<int64_t>(ElemType::BF16) &&
          type != static_cast<int64_t>(ElemType::F16) &&
          type != static_cast<int64_t>(ElemType::F8E4M3))
        r.fail("cache '" + info.name + "' has an unknown element type");
      info.type = static_cast<ElemType>(type);
      // Plans before e4m3 caches have no scale: 1.
      if (r.ok() && c.contains("scale")) {
        if (!c["scale"].is_number())
          r.fail("cache '" + info.name + "' has a non-numeric scale");
        else
          info.scale = c["scale"].get<double>();
      }
      if (r.ok() && !validCacheScale(info.type, info.scale))
        r.fail("cache '" + info.name + "' has scale " +
               std::to_string(info.scale) +
               (info.type == ElemType::F8E4M3
                    ? ": an e4m3 cache's scale is a positive power of two"
                    : ": only an e4m3 cache has a scale other than 1"));
      if (r.ok() && (info.rowShape.empty() ||
                     std::any_of(info.rowShape.begin(), info.rowShape.end(),
                                 [](int64_t d) { return d <= 0; })))
        r.fail("cache '" + info.name + "' has a bad row shape");
      plan.caches.push_back(std::move(info));
    }
  if (r.ok())
    for (const json &w : r.array(j, "weights")) {
      WeightInfo info;
      info.name = r.string(w, "name");
      int64_t layout = r.integer(w, "layout"), type = r.integer(w, "type");
      if (layout < 0 ||
          layout > static_cast<int64_t>(WeightLayout::PackedI4Dot) ||
          type < 0 || type > 2)
        r.fail("weight '" + info.name + "' has an unknown layout or type");
      info.layout = static_cast<WeightLayout>(layout);
      info.type = static_cast<ElemType>(type);
      info.shape = r.list<int64_t>(w, "shape");
      info.offset = static_cast<uint64_t>(r.integer(w, "offset"));
      info.bytes = static_cast<uint64_t>(r.integer(w, "bytes"));
      info.group = r.integer(w, "group");
      if (info.group < 0)
        r.fail("weight '" + info.name + "' has a negative group");
      plan.weights.push_back(std::move(info));
    }
  if (r.ok())
    for (const json &fj : r.array(j, "functions")) {
      FunctionPlan f;
      f.name = r.string(fj, "name");
      for (const json &vj : r.array(fj, "values")) {
        if (!r.ok())
          break;
        ValueInfo v;
        int64_t kind = r.integer(vj, "kind"), type = r.integer(vj, "type");
        if (kind < 0 || kind > 3 || type < 0 || type > 5)
          r.fail("a value of '" + f.name + "' has an unknown kind or type");
        v.kind = static_cast<ValueInfo::Kind>(kind);
        v.type = static_cast<ElemType>(type);
        v.index = static_cast<int32_t>(r.integer(vj, "index"));
        for (const json &dj : r.array(vj, "shape")) {
          DimExpr d;
          d.constant = r.integer(dj, "c");
          for (const json &fac : r.array(dj, "f")) {
            if (!fac.is_array() || fac.size() != 2 ||
                !fac[0].is_number_integer() || !fac[1].is_number_integer()) {
              r.fail("bad dim factor");
              break;
            }
            d.factors.push_back({fac[0].get<int32_t>(), fac[1].get<int32_t>()});
          }
          v.shape.push_back(std::move(d));
        }
        f.values.push_back(std::move(v));
      }
      f.inputs = r.list<int32_t>(fj, "inputs");
      f.outputs = r.list<int32_t>(fj, "outputs");
      for (const json &sj : r.array(fj, "steps")) {
        if (!r.ok())
          break;
        Step s;
        std::string op = r.string(sj, "op");
        const json &config = r.field(sj, "config");
        if (!r.ok())
          break;
        std::optional<StepConfig> c = configFromJson(r, op, config);
        if (!c) {
          r.fail("a step of '" + f.name + "' has an unknown op '" + op + "'");
          break;
        }
        s.config = std::move(*c);
        s.operands = r.list<int32_t>(sj, "operands");
        s.results = r.list<int32_t>(sj, "results");
        s.weights = r.list<int32_t>(sj, "weights");
        s.kernel = r.string(sj, "kernel");
        s.location = r.string(sj, "loc");
        f.steps.push_back(std::move(s));
      }
      plan.functions.push_back(std::move(f));
    }
  if (!r.ok())
    return absl::DataLossError("artifact header: " + r.error);

  // Every id must point into its table, and values must be defined before
  // they are used (dims refer to earlier values only).
  auto bad = [](const std::string &fn, const std::string &what) {
    return absl::DataLossError("artifact plan of '" + fn + "': " + what);
  };
  for (const FunctionPlan &f : plan.functions) {
    int32_t nv = static_cast<int32_t>(f.values.size());
    for (int32_t i = 0; i < nv; ++i) {
      const ValueInfo &v = f.values[i];
      for (const DimExpr &d : v.shape)
        for (auto [src, axis] : d.factors)
          // Inputs' dynamic dims are their own; others refer back.
          if (src < 0 || src > i ||
              (src == i && v.kind != ValueInfo::Kind::Input) || axis < 0 ||
              axis >= static_cast<int32_t>(f.values[src].shape.size()))
            return bad(f.name, "a dim refers to an undefined value or axis");
      if (v.kind == ValueInfo::Kind::Cache &&
          (v.index < 0 || v.index >= static_cast<int32_t>(plan.caches.size())))
        return bad(f.name, "a cache value names no cache");
      if (v.kind == ValueInfo::Kind::Alias && (v.index < 0 || v.index >= i))
        return bad(f.name, "an alias names no earlier value");
    }
    for (int32_t id : f.inputs)
      if (id < 0 || id >= nv || f.values[id].kind != ValueInfo::Kind::Input)
        return bad(f.name, "an input id is out of range");
    for (int32_t id : f.outputs)
      if (id < 0 || id >= nv)
        return bad(f.name, "an output id is out of range");
    for (int32_t i = 0; i < nv; ++i) {
      const ValueInfo &v = f.values[i];
      if (v.kind == ValueInfo::Kind::Cache &&
          v.type != plan.caches[v.index].type)
        return bad(f.name, "a cache value's type is not its cache's");
      if (v.kind == ValueInfo::Kind::Alias && v.type != f.values[v.index].type)
        return bad(f.name, "an alias's type is not its value's");
      if (isNarrow(v.type) && v.kind != ValueInfo::Kind::Cache &&
          v.kind != ValueInfo::Kind::Alias)
        return bad(f.name, "a bf16 / f16 / e4m3 value is not a KV cache");
    }
    for (const Step &s : f.steps) {
      if (absl::Status st = checkStep(plan, s); !st.ok())
        return bad(f.name, std::string(st.message()));
      for (int32_t id : s.operands)
        if (id < 0 || id >= nv)
          return bad(f.name, "an operand id is out of range");
      for (int32_t id : s.results)
        if (id < 0 || id >= nv)
          return bad(f.name, "a result id is out of range");
      for (int32_t id : s.weights)
        if (id < 0 || id >= static_cast<int32_t>(plan.weights.size()))
          return bad(f.name, "a weight id is out of range");
      if (absl::Status st = checkStepTypes(f, s); !st.ok())
        return bad(f.name, std::string(st.message()));
    }
  }
  return plan;
}

namespace {
/// Writes header, code and a weights section of `weightsBytes` bytes whose
/// fnv1a is `weightsSum`, which `writeWeights(fd)` appends to the file.
absl::Status writeArtifactWith(const std::string &path, const ModelPlan &plan,
                               const TargetInfo &target,
                               const std::string &code, uint64_t weightsBytes,
                               uint64_t weightsSum,
                               const std::function<bool(int)> &writeWeights) {
  auto align = [](uint64_t x) { return (x + 63) & ~uint64_t{63}; };
  // Section offsets depend on the header length, which depends on the
  // offsets' digits: fix the header size by padding it to a multiple of 64.
  json sections;
  std::string header;
  uint64_t codeOffset = 0, weightsOffset = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    sections = {{"code_offset", codeOffset},
                {"code_bytes", code.size()},
                {"code_checksum", fnv1a(code.data(), code.size())},
                {"weights_offset", weightsOffset},
                {"weights_bytes", weightsBytes},
                {"weights_checksum", weightsSum}};
    header = planToJson(plan, target, sections.dump());
    uint64_t headerEnd = align(24 + header.size());
    uint64_t newCode = headerEnd, newWeights = align(headerEnd + code.size());
    if (newCode == codeOffset && newWeights == weightsOffset)
      break;
    codeOffset = newCode;
    weightsOffset = newWeights;
  }
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::UnavailableError("cannot write " + tmp + ": " +
                                  std::strerror(errno));
  uint64_t len = header.size(), sum = fnv1a(header.data(), header.size());
  std::string head = "DSARTIF1";
  head.append(reinterpret_cast<const char *>(&len), 8);
  head.append(reinterpret_cast<const char *>(&sum), 8);
  head += header;
  head.resize(codeOffset, '\0');
  head += code;
  head.resize(weightsOffset, '\0');
  bool ok = ::ds::writeAll(fd, head.data(), head.size()) && writeWeights(fd);
  const int err = errno;
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    ::unlink(tmp.c_str());
    return absl::UnavailableError("writing " + tmp +
                                  " failed: " + std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return absl::UnavailableError("cannot rename " + tmp + " to " + path);
  return absl::OkStatus();
}
} // namespace

absl::Status writeArtifact(const std::string &path, const ModelPlan &plan,
                           const TargetInfo &target, const std::string &code,
                           const std::string &weights) {
  return writeArtifactWith(path, plan, target, code, weights.size(),
                           fnv1a(weights.data(), weights.size()), [&](int fd) {
                             return ::ds::writeAll(fd, weights.data(),
                                                   weights.size());
                           });
}

absl::Status writeArtifact(const std::string &path, const ModelPlan &plan,
                           const TargetInfo &target, const std::string &code,
                           const WeightsFile &weights) {
  // The checksum in chunks through memory (the page cache serves them);
  // the bytes then go file to file.
  uint64_t sum = 0xcbf29ce484222325ULL;
  std::vector<char> buffer(std::min<uint64_t>(weights.size, 8u << 20));
  for (uint64_t at = 0; at < weights.size;) {
    ssize_t n = ::pread(weights.fd, buffer.data(),
                        std::min<uint64_t>(weights.size - at, buffer.size()),
                        static_cast<off_t>(at));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return absl::UnavailableError(
          "reading the weights section back failed: " +
          std::string(std::strerror(n < 0 ? errno : EIO)));
    sum = fnv1a(buffer.data(), static_cast<size_t>(n), sum);
    at += static_cast<uint64_t>(n);
  }
  return writeArtifactWith(
      path, plan, target, code, weights.size, sum,
      [&](int fd) { return ::ds::copyAll(weights.fd, fd, weights.size); });
}

} // namespace ds::rt
