//===- PlanTest.cpp - the typed plan format: round trip and versions ------===//
//
// Every step kind, with every field set to a non-default value, survives
// planToJson -> planFromJson field by field; artifacts of another format
// version (or none) are refused naming both versions.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Plan.h"
#include "ds/rt/Device.h"
#include "ds/rt/KVCache.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <tuple>

using namespace ds::rt;

namespace {

auto fields(const steps::ActQuant &q) {
  return std::tie(q.storage, q.group, q.scale);
}
auto fields(const steps::Embedding &c) { return std::tie(c.firstRow, c.vocab); }
auto fields(const steps::RMSNorm &c) { return std::tie(c.epsilon); }
auto fields(const steps::Linear &c) {
  return std::tuple_cat(std::tie(c.norm, c.bias, c.gated, c.residual,
                                 c.activation, c.normEpsilon, c.inputRound,
                                 c.outputRound),
                        fields(c.inputQuant));
}
auto fields(const steps::Copy &c) { return std::tie(c.axis, c.sizes); }
auto fields(const steps::Rope &c) {
  return std::tie(c.rotaryDim, c.style, c.attentionScaling, c.invFreq);
}
auto fields(const steps::CacheUpdate &) { return std::tuple<>(); }
auto fields(const steps::Attention &c) {
  return std::tie(c.slidingWindow, c.cached, c.scale);
}
auto fields(const steps::MLAAttention &c) {
  return std::tie(c.cached, c.scale);
}
auto fields(const steps::Router &c) {
  return std::tie(c.numExperts, c.topK, c.nGroup, c.topkGroup, c.sigmoid,
                  c.groupScoreMax, c.normTopkProb, c.bias, c.kept,
                  c.normEpsilon, c.scalingFactor);
}
auto fields(const steps::MoE &c) {
  return std::tuple_cat(std::tie(c.intermediate, c.activation, c.inputRound,
                                 c.outputRound, c.firstExpert, c.routedExperts),
                        fields(c.inputQuant), fields(c.hiddenQuant));
}
auto fields(const steps::Elementwise &c) { return std::tie(c.broadcast); }
auto fields(const steps::Alias &) { return std::tuple<>(); }
auto fields(const steps::Generated &c) { return std::tie(c.kind, c.epsilon); }
auto fields(const steps::AllReduce &c) { return std::tie(c.gridAxes); }
auto fields(const steps::AllGather &c) { return std::tie(c.axis, c.gridAxes); }
auto fields(const steps::Send &c) { return std::tie(c.gridAxes, c.peer); }
auto fields(const steps::Recv &c) { return std::tie(c.gridAxes, c.peer); }

/// A plan whose one function has a step of every kind, each field set away
/// from its default, and weights of the layouts the validator expects.
ModelPlan everyKind() {
  ModelPlan p;
  p.arch = "test";
  p.vocabSize = 100;
  p.maxCacheLen = 8;
  p.eosTokenIds = {2, 7};
  p.caches.push_back({"k", {8, 2, 4}});
  auto raw = [&](std::vector<int64_t> shape) {
    p.weights.push_back({"raw" + std::to_string(p.weights.size()),
                         WeightLayout::Raw, ElemType::F32, shape, 0, 0, 0});
    return static_cast<int32_t>(p.weights.size() - 1);
  };
  auto packed = [&](std::vector<int64_t> shape) {
    p.weights.push_back({"packed" + std::to_string(p.weights.size()),
                         WeightLayout::PackedF32, ElemType::F32, shape, 0, 0,
                         0});
    return static_cast<int32_t>(p.weights.size() - 1);
  };
  FunctionPlan f;
  f.name = "decode";
  for (int i = 0; i < 8; ++i)
    f.values.push_back({ValueInfo::Kind::Temp, ElemType::F32, {}, -1});
  auto step = [&](StepConfig c, std::vector<int32_t> ops,
                  std::vector<int32_t> res, std::vector<int32_t> w,
                  std::string kernel = "") {
    Step s;
    s.config = std::move(c);
    s.operands = std::move(ops);
    s.results = std::move(res);
    s.weights = std::move(w);
    s.kernel = std::move(kernel);
    s.location = std::string("op ") + opName(s.op());
    f.steps.push_back(std::move(s));
  };
  step(steps::Embedding{100, 200}, {0}, {1}, {raw({100, 4})});
  step(steps::RMSNorm{1e-5}, {1}, {2}, {raw({4})});
  steps::Linear lin;
  lin.norm = lin.bias = lin.gated = lin.residual = true;
  lin.activation = 2;
  lin.normEpsilon = 1e-6;
  lin.inputQuant = {2, 32, 0.5};
  lin.inputRound = 1;
  lin.outputRound = 2;
  step(lin, {1, 2}, {3}, {packed({8, 4}), raw({8}), raw({4})});
  step(steps::Copy{1, {1, 3}}, {3}, {4, 5}, {});
  step(steps::Rope{4, 2, 1.25, {1.0, 0.5}}, {1, 0}, {2}, {});
  step(steps::CacheUpdate{}, {6, 0, 2}, {6}, {});
  step(steps::Attention{16, true, 0.125}, {1, 2, 3, 0}, {4}, {});
  step(steps::MLAAttention{true, 0.25}, {1, 2, 3, 4, 0}, {5},
       {packed({4, 4}), packed({4, 4}), raw({2, 2})});
  steps::Router r;
  r.numExperts = 8;
  r.topK = 2;
  r.nGroup = 4;
  r.topkGroup = 2;
  r.sigmoid = r.groupScoreMax = r.normTopkProb = r.bias = true;
  r.kept = {0, 3, 5};
  r.normEpsilon = 1e-20;
  r.scalingFactor = 2.5;
  step(r, {1}, {2, 3}, {packed({8, 4}), raw({8})});
  steps::MoE m;
  m.intermediate = 6;
  m.activation = 3;
  m.inputQuant = {0, 0, 0.0};
  m.hiddenQuant = {4, 128, 0.75};
  m.inputRound = 2;
  m.outputRound = 1;
  m.firstExpert = 4;
  m.routedExperts = 8;
  step(m, {1, 2, 3}, {4}, {packed({2, 12, 4}), packed({2, 4, 6})});
  step(steps::Elementwise{{1, 0, 1}}, {1, 2}, {3}, {}, "ew0");
  step(steps::Alias{}, {3}, {4}, {});
  step(steps::Generated{steps::Generated::RMSNorm, 3e-6}, {1}, {2}, {raw({4})},
       "rms0");
  step(steps::AllReduce{{1}}, {3}, {4}, {});
  step(steps::AllGather{2, {0}}, {3}, {4}, {});
  // Process 3 of a [3, 2] grid is stage 1 of 3 along axis 0.
  step(steps::Send{{0}, 2}, {3}, {}, {});
  step(steps::Recv{{0}, 0}, {}, {4}, {});
  p.processes = 6;
  p.process = 3;
  p.grid = {3, 2};
  p.pipelineAxis = 0;
  p.functions.push_back(std::move(f));
  return p;
}

} // namespace

TEST(Plan, EveryStepKindRoundTripsFieldByField) {
  ModelPlan plan = everyKind();
  TargetInfo target{"x86_64-unknown-linux-gnu",
                    "sapphirerapids",
                    "+avx2",
                    {"avx2", "fma", "avx512f"}};
  absl::StatusOr<ModelPlan> back =
      planFromJson(planToJson(plan, target), &target);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->eosTokenIds, plan.eosTokenIds);
  EXPECT_EQ(back->processes, 6);
  EXPECT_EQ(back->process, 3);
  EXPECT_EQ(back->grid, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(back->pipelineAxis, 0);
  EXPECT_EQ(target.requiredIsa,
            (std::vector<std::string>{"avx2", "fma", "avx512f"}));
  const auto &a = plan.functions[0].steps, &b = back->functions[0].steps;
  ASSERT_EQ(a.size(), b.size());
  // Every kind is present once, in OpCode order.
  ASSERT_EQ(a.size(), std::variant_size_v<StepConfig>);
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(opName(a[i].op()));
    EXPECT_EQ(static_cast<size_t>(a[i].op()), i);
    ASSERT_EQ(a[i].op(), b[i].op());
    EXPECT_EQ(a[i].operands, b[i].operands);
    EXPECT_EQ(a[i].results, b[i].results);
    EXPECT_EQ(a[i].weights, b[i].weights);
    EXPECT_EQ(a[i].kernel, b[i].kernel);
    EXPECT_EQ(a[i].location, b[i].location);
    std::visit(
        [&](const auto &x) {
          using T = std::decay_t<decltype(x)>;
          EXPECT_TRUE(fields(x) == fields(b[i].as<T>()));
        },
        a[i].config);
  }
}

TEST(Plan, AnotherFormatVersionIsRefusedNamingBoth) {
  ModelPlan plan = everyKind();
  nlohmann::json j = nlohmann::json::parse(planToJson(plan, TargetInfo()));
  EXPECT_EQ(j["format_version"], kArtifactFormatVersion);
  j["format_version"] = kArtifactFormatVersion + 1;
  absl::StatusOr<ModelPlan> newer = planFromJson(j.dump());
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(std::string(newer.status().message())
                .find("format version is " +
                      std::to_string(kArtifactFormatVersion + 1) +
                      "; this runtime reads version " +
                      std::to_string(kArtifactFormatVersion)),
            std::string::npos)
      << newer.status();
  j.erase("format_version");
  absl::StatusOr<ModelPlan> none = planFromJson(j.dump());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(std::string(none.status().message()).find("no format version"),
            std::string::npos);
}

TEST(Plan, OutOfRangeConfigurationsAreRefused) {
  auto refuses = [](auto mutate, const char *what) {
    ModelPlan plan = everyKind();
    mutate(plan.functions[0].steps);
    absl::StatusOr<ModelPlan> r = planFromJson(planToJson(plan, TargetInfo()));
    EXPECT_FALSE(r.ok()) << what;
  };
  refuses([](auto &s) { s[2].template as<steps::Linear>().outputRound = 3; },
          "rounding");
  refuses([](auto &s) { s[2].template as<steps::Linear>().activation = 9; },
          "activation");
  refuses([](auto &s) { s[2].template as<steps::Linear>().bias = false; },
          "weights not matching the flags");
  refuses([](auto &s) { s[3].template as<steps::Copy>().sizes.pop_back(); },
          "split pieces");
  refuses([](auto &s) { s[4].template as<steps::Rope>().invFreq.push_back(1); },
          "rope frequencies");
  refuses([](auto &s) { s[8].template as<steps::Router>().topK = 0; },
          "router top-k");
  refuses(
      [](auto &s) { s[9].template as<steps::MoE>().hiddenQuant.storage = 9; },
      "quant storage");
  refuses([](auto &s) { s[13].template as<steps::AllReduce>().gridAxes = {2}; },
          "a grid axis the grid does not have");
  refuses(
      [](auto &s) { s[14].template as<steps::AllGather>().gridAxes = {1, 0}; },
      "grid axes out of order");
  refuses([](auto &s) { s[15].template as<steps::Send>().peer = 1; },
          "a send to this very process");
  refuses([](auto &s) { s[15].template as<steps::Send>().peer = 0; },
          "a send back to the previous stage");
  refuses([](auto &s) { s[16].template as<steps::Recv>().peer = 2; },
          "a receive from the next stage");
  refuses([](auto &s) { s[16].template as<steps::Recv>().gridAxes = {1}; },
          "a receive along another axis than the pipeline's");
  ModelPlan plan = everyKind();
  plan.pipelineAxis = 2;
  EXPECT_FALSE(planFromJson(planToJson(plan, TargetInfo())).ok())
      << "a pipeline axis the grid does not have";
  plan = everyKind();
  plan.grid = {4, 2};
  EXPECT_FALSE(planFromJson(planToJson(plan, TargetInfo())).ok())
      << "a grid of 8 processes for a plan of 6";
  plan = everyKind();
  plan.processes = 1;
  plan.process = 0;
  plan.grid.assign(kMaxGridAxes + 1, 1);
  absl::StatusOr<ModelPlan> wide = planFromJson(planToJson(plan, TargetInfo()));
  ASSERT_FALSE(wide.ok()) << "a grid of more axes than any partition makes";
  EXPECT_NE(std::string(wide.status().message()).find("axes (at most 8)"),
            std::string::npos)
      << wide.status();
}

/// Groups of a process grid along some of its axes: tensor parallelism
/// inside a [ep, tp] grid pairs processes {0, 1} and {2, 3}; expert
/// parallelism pairs {0, 2} and {1, 3}; both axes: all four.
TEST(Plan, GridGroupsAlongAxes) {
  const std::vector<int64_t> grid = {2, 2};
  for (int64_t r = 0; r < 4; ++r) {
    GridGroup tp = gridGroupOf(grid, {1}, r), ep = gridGroupOf(grid, {0}, r),
              all = gridGroupOf(grid, {0, 1}, r);
    EXPECT_EQ(tp.group, r / 2);
    EXPECT_EQ(tp.index, r % 2);
    EXPECT_EQ(tp.size, 2);
    EXPECT_EQ(ep.group, r % 2);
    EXPECT_EQ(ep.index, r / 2);
    EXPECT_EQ(all.group, 0);
    EXPECT_EQ(all.index, r);
    EXPECT_EQ(all.size, 4);
  }
  // [dp, ep, tp] = [2, 3, 2]: process 11 is (1, 2, 1).
  GridGroup g = gridGroupOf({2, 3, 2}, {1, 2}, 11);
  EXPECT_EQ(g.group, 1);
  EXPECT_EQ(g.index, 5);
  EXPECT_EQ(g.size, 6);
  g = gridGroupOf({2, 3, 2}, {0, 2}, 11);
  EXPECT_EQ(g.group, 2);
  EXPECT_EQ(g.index, 3);
}

namespace {
/// A function that updates a bf16 cache and attends over it.
ModelPlan narrowCache() {
  ModelPlan p;
  p.arch = "test";
  p.vocabSize = 10;
  p.maxCacheLen = 8;
  p.caches.push_back({"k", {8, 2, 4}, ElemType::BF16});
  FunctionPlan f;
  f.name = "decode";
  using K = ValueInfo::Kind;
  f.values = {
      {K::Input, ElemType::I64, {}, 0}, {K::Cache, ElemType::BF16, {}, 0},
      {K::Temp, ElemType::F32, {}, -1}, {K::Alias, ElemType::BF16, {}, 1},
      {K::Temp, ElemType::F32, {}, -1}, {K::Temp, ElemType::F32, {}, -1}};
  f.inputs = {0};
  f.outputs = {5};
  Step update;
  update.config = steps::CacheUpdate{};
  update.operands = {1, 0, 2};
  update.results = {3};
  Step attend;
  attend.config = steps::Attention{0, true, 0.5};
  attend.operands = {4, 1, 1, 0};
  attend.results = {5};
  f.steps = {update, attend};
  p.functions.push_back(std::move(f));
  return p;
}
} // namespace

/// An artifact whose weights come from a file (the compiler's spool) is
/// byte for byte the one written from memory, and loads.
TEST(Plan, ArtifactFromAWeightsFileEqualsOneFromMemory) {
  ModelPlan plan = narrowCache();
  std::string weights(100000, '\0');
  for (size_t i = 0; i < weights.size(); ++i)
    weights[i] = static_cast<char>(i * 31 + 7);
  const std::string dir = ::testing::TempDir();
  const std::string a = dir + "/ds-plan-a.dsa", b = dir + "/ds-plan-b.dsa",
                    spool = dir + "/ds-plan-weights.bin";
  ASSERT_TRUE(writeArtifact(a, plan, TargetInfo(), "code", weights).ok());
  FILE *f = std::fopen(spool.c_str(), "wb+");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(weights.data(), 1, weights.size(), f), weights.size());
  std::fflush(f);
  absl::Status st = writeArtifact(b, plan, TargetInfo(), "code",
                                  WeightsFile{fileno(f), weights.size()});
  std::fclose(f);
  ASSERT_TRUE(st.ok()) << st;
  auto slurp = [](const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string bytesA = slurp(a), bytesB = slurp(b);
  EXPECT_GT(bytesA.size(), weights.size());
  EXPECT_EQ(bytesA, bytesB);
  // A short file is an error, not a truncated artifact.
  f = std::fopen(spool.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  st = writeArtifact(b, plan, TargetInfo(), "code",
                     WeightsFile{fileno(f), weights.size() + 10});
  std::fclose(f);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(slurp(b), bytesA); // the old artifact is left as it was
  std::remove(a.c_str());
  std::remove(b.c_str());
  std::remove(spool.c_str());
}

TEST(Plan, NarrowCachesRoundTripAndReachOnlyCacheSteps) {
  absl::StatusOr<ModelPlan> back =
      planFromJson(planToJson(narrowCache(), TargetInfo()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->caches[0].type, ElemType::BF16);
  EXPECT_EQ(back->functions[0].values[3].type, ElemType::BF16);
  EXPECT_EQ(elemSize(ElemType::BF16), 2u);
  auto refuses = [](auto mutate, const std::string &message) {
    ModelPlan plan = narrowCache();
    mutate(plan);
    absl::StatusOr<ModelPlan> r = planFromJson(planToJson(plan, TargetInfo()));
    ASSERT_FALSE(r.ok()) << message;
    EXPECT_NE(std::string(r.status().message()).find(message),
              std::string::npos)
        << r.status();
  };
  refuses([](ModelPlan &p) { p.functions[0].values[2].type = ElemType::F16; },
          "a bf16 / f16 / e4m3 value is not a KV cache");
  refuses([](ModelPlan &p) { p.caches[0].type = ElemType::F16; },
          "a cache value's type is not its cache's");
  refuses([](ModelPlan &p) { p.functions[0].values[3].type = ElemType::F32; },
          "an alias's type is not its value's");
  refuses(
      [](ModelPlan &p) {
        p.functions[0].steps[1].as<steps::Attention>().cached = false;
      },
      "attention reads a bf16 / f16 / e4m3 value it cannot read");
  refuses([](ModelPlan &p) { p.functions[0].steps[0].operands = {1, 0, 3}; },
          "cache_update reads a bf16 / f16 / e4m3 value it cannot read");
  refuses(
      [](ModelPlan &p) {
        Step copy;
        copy.config = steps::Copy{1, {8}};
        copy.operands = {1};
        copy.results = {4};
        p.functions[0].steps.push_back(copy);
      },
      "split reads a bf16 / f16 / e4m3 value it cannot read");
}

/// An e4m3 cache's scale travels with the plan; a scale that is not a
/// positive power of two, or a scale on a cache of another type, is
/// refused when the plan is read (the kernels would read it as a
/// different cache).
TEST(Plan, F8CacheScalesRoundTripAndAreChecked) {
  auto f8 = [](double scale) {
    ModelPlan p = narrowCache();
    p.caches[0].type = ElemType::F8E4M3;
    p.caches[0].scale = scale;
    p.functions[0].values[1].type = ElemType::F8E4M3;
    p.functions[0].values[3].type = ElemType::F8E4M3;
    return p;
  };
  absl::StatusOr<ModelPlan> back =
      planFromJson(planToJson(f8(0.0078125), TargetInfo()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->caches[0].type, ElemType::F8E4M3);
  EXPECT_EQ(back->caches[0].scale, 0.0078125);
  EXPECT_EQ(elemSize(ElemType::F8E4M3), 1u);
  EXPECT_EQ(elemTypeName(ElemType::F8E4M3), std::string("f8e4m3"));
  const std::string notPow2 =
      "an e4m3 cache's scale is a positive power of two";
  for (auto [bad, message] :
       {std::pair{0.0, notPow2}, std::pair{-0.25, notPow2},
        std::pair{0.3, notPow2}, std::pair{3.0, notPow2},
        // JSON has no infinity: it is written as null.
        std::pair{1e300 * 1e10, std::string("has a non-numeric scale")}}) {
    absl::StatusOr<ModelPlan> r =
        planFromJson(planToJson(f8(bad), TargetInfo()));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(std::string(r.status().message()).find(message),
              std::string::npos)
        << r.status();
  }
  ModelPlan bf16 = narrowCache();
  bf16.caches[0].scale = 0.5;
  absl::StatusOr<ModelPlan> r = planFromJson(planToJson(bf16, TargetInfo()));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(std::string(r.status().message())
                .find("only an e4m3 cache has a scale other than 1"),
            std::string::npos)
      << r.status();
  // A plan written before e4m3 caches has no "scale": it reads as 1.
  nlohmann::json j =
      nlohmann::json::parse(planToJson(narrowCache(), TargetInfo()));
  for (nlohmann::json &c : j["caches"])
    c.erase("scale");
  back = planFromJson(j.dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->caches[0].scale, 1.0);
}

/// A KV cache made from an e4m3 plan stores values as e4m3 times the
/// cache's scale (ties to even, saturating), per slot.
TEST(Plan, F8KVCacheStoresScaledValues) {
  ModelPlan p = narrowCache();
  p.caches[0].type = ElemType::F8E4M3;
  p.caches[0].scale = 0.25;
  absl::StatusOr<KVCache> cache = KVCache::create(p, 2);
  ASSERT_TRUE(cache.ok()) << cache.status();
  EXPECT_EQ(cache->scale(0), 0.25f);
  EXPECT_EQ(cache->slotSize(0), 8 * 2 * 4);
  // 100 / 0.25 = 400 lies halfway between 384 and 416: even is 384.
  std::vector<float> x = {1.0f, 100.0f, 200.0f, -0.3f}, y(6, -1.0f);
  cache->storeFloats(0, cache->slotSize(0) + 1, x.data(), 4);
  cache->loadFloats(0, cache->slotSize(0), 6, y.data());
  EXPECT_EQ(y, (std::vector<float>{0.0f, 1.0f, 96.0f, 112.0f, -0.3125f, 0.0f}));
}
