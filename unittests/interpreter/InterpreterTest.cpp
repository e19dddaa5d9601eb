//===- InterpreterTest.cpp - op semantics of the reference interpreter ----===//
//
// Hand-computed expectations for the ops whose conventions are easy to get
// wrong: the three RoPE pairings and partial rotary dims, grouped routing
// with a selection-only bias, dispatch/combine ordering, causal and sliding
// window masking, and run-time errors.
//
//===----------------------------------------------------------------------===//

#include "ds/interpreter/Interpreter.h"
#include "ds/dialects/InitAllDialects.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace mlir;
using ds::HostTensor;

namespace {

class InterpreterTest : public ::testing::Test {
protected:
  InterpreterTest() {
    DialectRegistry registry;
    ds::registerAllDialects(registry);
    ctx.appendDialectRegistry(registry);
    ctx.loadAllAvailableDialects();
    ctx.getDiagEngine().registerHandler([this](Diagnostic &d) {
      lastError = d.str();
      return success();
    });
  }

  FailureOr<std::vector<HostTensor>> run(StringRef source,
                                         std::vector<HostTensor> args) {
    module = parseSourceString<ModuleOp>(source, &ctx);
    EXPECT_TRUE(module);
    if (!module)
      return failure();
    ds::Interpreter interp(*module, nullptr);
    return interp.run("f", args);
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
  std::string lastError;
};

constexpr const char *kRope = R"(
func.func @f(%x: tensor<1x1x4xf32>, %p: tensor<1x1xi64>) -> tensor<1x1x4xf32> {
  %0 = ds.rope %x, %p {rope = #ds.rope<dim = DIM, theta = 100.0, style = STYLE>} : tensor<1x1x4xf32>, tensor<1x1xi64>
  return %0 : tensor<1x1x4xf32>
})";

std::vector<float> rope(const std::string &style, int dim) {
  std::string src = kRope;
  src.replace(src.find("DIM"), 3, std::to_string(dim));
  src.replace(src.find("STYLE"), 5, style);
  MLIRContext ctx;
  DialectRegistry registry;
  ds::registerAllDialects(registry);
  ctx.appendDialectRegistry(registry);
  ctx.loadAllAvailableDialects();
  OwningOpRef<ModuleOp> m = parseSourceString<ModuleOp>(src, &ctx);
  ds::Interpreter interp(*m, nullptr);
  auto out = interp.run("f", {HostTensor::fromFloats({1, 1, 4}, {1, 2, 3, 4}),
                              HostTensor::fromInts({1, 1}, {3})});
  EXPECT_TRUE(succeeded(out));
  return (*out)[0].toFloats();
}

TEST(InterpreterRope, Pairings) {
  // d = 4, theta = 100: inv_freq = [1, 0.1]; position 3.
  float c0 = std::cos(3.0f), s0 = std::sin(3.0f);
  float c1 = std::cos(0.3f), s1 = std::sin(0.3f);
  std::vector<float> half = rope("rotate_half", 4);
  EXPECT_NEAR(half[0], 1 * c0 - 3 * s0, 1e-5);
  EXPECT_NEAR(half[2], 3 * c0 + 1 * s0, 1e-5);
  EXPECT_NEAR(half[1], 2 * c1 - 4 * s1, 1e-5);
  EXPECT_NEAR(half[3], 4 * c1 + 2 * s1, 1e-5);
  std::vector<float> inter = rope("interleaved", 4);
  EXPECT_NEAR(inter[0], 1 * c0 - 2 * s0, 1e-5);
  EXPECT_NEAR(inter[1], 2 * c0 + 1 * s0, 1e-5);
  EXPECT_NEAR(inter[2], 3 * c1 - 4 * s1, 1e-5);
  EXPECT_NEAR(inter[3], 4 * c1 + 3 * s1, 1e-5);
  // DeepSeek-V3: adjacent pairs, written de-interleaved.
  std::vector<float> de = rope("deinterleave", 4);
  EXPECT_NEAR(de[0], inter[0], 1e-6);
  EXPECT_NEAR(de[1], inter[2], 1e-6);
  EXPECT_NEAR(de[2], inter[1], 1e-6);
  EXPECT_NEAR(de[3], inter[3], 1e-6);
  // Partial rotary dim 2: inv_freq = [1]; the last two channels pass.
  std::vector<float> partial = rope("rotate_half", 2);
  EXPECT_NEAR(partial[0], 1 * c0 - 2 * s0, 1e-5);
  EXPECT_NEAR(partial[1], 2 * c0 + 1 * s0, 1e-5);
  EXPECT_EQ(partial[2], 3.0f);
  EXPECT_EQ(partial[3], 4.0f);
}

TEST_F(InterpreterTest, GroupedRoutingUsesBiasForSelectionOnly) {
  // 4 experts in 2 groups, keep 1 group, top-2. Sigmoid scores of logits
  // [2, -2, 1, 1]; the bias lifts group 1 (experts 2, 3) above group 0.
  auto out = run(R"(
func.func @f(%l: tensor<1x4xf32>, %b: tensor<4xf32>) -> (tensor<1x2xf32>, tensor<1x2xi32>) {
  %w, %i = ds.router %l bias %b {routing = #ds.routing<num_experts = 4, top_k = 2, scoring = sigmoid, n_group = 2, topk_group = 1, group_score = top2_sum, norm_topk_prob = true, routed_scaling_factor = 2.0>} : tensor<1x4xf32>, tensor<4xf32> -> tensor<1x2xf32>, tensor<1x2xi32>
  return %w, %i : tensor<1x2xf32>, tensor<1x2xi32>
})",
                 {HostTensor::fromFloats({1, 4}, {2, -2, 1, 1}),
                  HostTensor::fromFloats({4}, {0, 0, 1, 0.5})});
  ASSERT_TRUE(succeeded(out));
  std::vector<int64_t> idx = (*out)[1].toInts();
  EXPECT_EQ(idx, (std::vector<int64_t>{2, 3}));
  // Weights come from the unbiased scores: equal, renormalized, scaled.
  std::vector<float> w = (*out)[0].toFloats();
  EXPECT_NEAR(w[0], 1.0f, 1e-6);
  EXPECT_NEAR(w[1], 1.0f, 1e-6);
}

TEST_F(InterpreterTest, SoftmaxTopKWithoutRenormalization) {
  auto out = run(R"(
func.func @f(%l: tensor<1x3xf32>) -> (tensor<1x2xf32>, tensor<1x2xi32>) {
  %w, %i = ds.router %l {routing = #ds.routing<num_experts = 3, top_k = 2>} : tensor<1x3xf32> -> tensor<1x2xf32>, tensor<1x2xi32>
  return %w, %i : tensor<1x2xf32>, tensor<1x2xi32>
})",
                 {HostTensor::fromFloats({1, 3}, {0, 1, 2})});
  ASSERT_TRUE(succeeded(out));
  float z = std::exp(0.0f) + std::exp(1.0f) + std::exp(2.0f);
  EXPECT_EQ((*out)[1].toInts(), (std::vector<int64_t>{2, 1}));
  EXPECT_NEAR((*out)[0].toFloats()[0], std::exp(2.0f) / z, 1e-6);
  EXPECT_NEAR((*out)[0].toFloats()[1], std::exp(1.0f) / z, 1e-6);
}

TEST_F(InterpreterTest, DispatchSortsByExpertAndCombineRestores) {
  // Tokens 0, 1 (H = 1) route to experts [1, 0] and [1, 1].
  auto out = run(R"(
func.func @f(%x: tensor<2x1xf32>, %i: tensor<2x2xi32>, %w: tensor<2x2xf32>) -> (tensor<4x1xf32>, tensor<3xi64>, tensor<4xi64>, tensor<2x1xf32>) {
  %s, %o, %r = ds.moe_dispatch %x, %i experts 2 : tensor<2x1xf32>, tensor<2x2xi32> -> tensor<4x1xf32>, tensor<3xi64>, tensor<4xi64>
  %y = ds.moe_combine %s, %w, %r : tensor<4x1xf32>, tensor<2x2xf32>, tensor<4xi64> -> tensor<2x1xf32>
  return %s, %o, %r, %y : tensor<4x1xf32>, tensor<3xi64>, tensor<4xi64>, tensor<2x1xf32>
})",
                 {HostTensor::fromFloats({2, 1}, {10, 20}),
                  HostTensor::fromInts({2, 2}, {1, 0, 1, 1}),
                  HostTensor::fromFloats({2, 2}, {0.25, 0.75, 0.5, 0.5})});
  ASSERT_TRUE(succeeded(out));
  EXPECT_EQ((*out)[1].toInts(), (std::vector<int64_t>{0, 1, 4}));
  EXPECT_EQ((*out)[2].toInts(), (std::vector<int64_t>{1, 0, 2, 3}));
  EXPECT_EQ((*out)[0].toFloats(), (std::vector<float>{10, 10, 20, 20}));
  // Identity experts: each token gets back (sum of its weights) * x.
  EXPECT_EQ((*out)[3].toFloats(), (std::vector<float>{10, 20}));
}

TEST_F(InterpreterTest, CausalAndSlidingWindowMasks) {
  // One head, D = 1, q = k = 0 (uniform scores), v = [1, 2, 3]: position p
  // averages the visible values.
  const char *src = R"(
func.func @f(%q: tensor<1x3x1x1xf32>, %k: tensor<1x3x1x1xf32>, %v: tensor<1x3x1x1xf32>, %p: tensor<1x3xi64>) -> (tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>) {
  %a = ds.attention %q, %k, %v, %p {scale = 1.0 : f64} : tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>, tensor<1x3xi64> -> tensor<1x3x1x1xf32>
  %b = ds.attention %q, %k, %v, %p {scale = 1.0 : f64, sliding_window = 2 : i64} : tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>, tensor<1x3xi64> -> tensor<1x3x1x1xf32>
  return %a, %b : tensor<1x3x1x1xf32>, tensor<1x3x1x1xf32>
})";
  HostTensor zeros = HostTensor::fromFloats({1, 3, 1, 1}, {0, 0, 0});
  auto out =
      run(src, {zeros, zeros, HostTensor::fromFloats({1, 3, 1, 1}, {1, 2, 3}),
                HostTensor::fromInts({1, 3}, {0, 1, 2})});
  ASSERT_TRUE(succeeded(out));
  std::vector<float> causal = (*out)[0].toFloats();
  EXPECT_NEAR(causal[0], 1.0f, 1e-6);
  EXPECT_NEAR(causal[1], 1.5f, 1e-6);
  EXPECT_NEAR(causal[2], 2.0f, 1e-6);
  std::vector<float> window = (*out)[1].toFloats();
  EXPECT_NEAR(window[2], 2.5f, 1e-6) << "window 2 sees positions 1 and 2";
}

TEST_F(InterpreterTest, CacheUpdateRejectsPositionsPastTheCache) {
  auto out = run(R"(
func.func @f(%c: tensor<1x2x1xf32>, %p: tensor<1x1xi64>, %u: tensor<1x1x1xf32>) -> tensor<1x2x1xf32> {
  %0 = ds.cache_update %c[%p], %u : tensor<1x2x1xf32>, tensor<1x1xi64>, tensor<1x1x1xf32>
  return %0 : tensor<1x2x1xf32>
})",
                 {HostTensor::fromFloats({1, 2, 1}, {0, 0}),
                  HostTensor::fromInts({1, 1}, {2}),
                  HostTensor::fromFloats({1, 1, 1}, {5})});
  EXPECT_TRUE(failed(out));
  EXPECT_EQ(lastError, "position 2 is outside the cache [0, 2)");
}

TEST_F(InterpreterTest, ArgumentsAreCheckedAgainstTheSignature) {
  auto out = run(R"(
func.func @f(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  return %x : tensor<2x4xf32>
})",
                 {HostTensor::fromFloats({2, 3}, {1, 2, 3, 4, 5, 6})});
  EXPECT_TRUE(failed(out));
  EXPECT_EQ(lastError, "argument 0 dimension 1 must be 4, got 3");
}

} // namespace
