//===- GenerationTest.cpp - sampling and stop conditions, no model --------===//
//
// The sampler on fixed logits: the distribution of 10k draws matches the
// expected probabilities (chi-square), truncations exclude what they
// should, the draw is a function of (seed, index), and SequenceDecoder's
// stop conditions, streaming and logprobs.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Generation.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <numeric>

using namespace ds::rt;

namespace {

/// Logits whose softmax is `probs`.
std::vector<float> logitsOf(const std::vector<double> &probs) {
  std::vector<float> l;
  for (double p : probs)
    l.push_back(static_cast<float>(std::log(p)));
  return l;
}

const std::vector<double> kProbs = {0.30, 0.20, 0.15, 0.10,
                                    0.10, 0.08, 0.05, 0.02};

/// Counts of 10k draws (output indices 0..9999 under one seed).
std::vector<int64_t> draw(const SamplingOptions &o,
                          const std::vector<float> &logits, int n = 10000) {
  Sampler s(o, static_cast<int64_t>(logits.size()));
  std::vector<int64_t> counts(logits.size());
  for (int i = 0; i < n; ++i)
    ++counts[s.sample(logits.data(), i)];
  return counts;
}

/// Pearson's statistic of `counts` against `expected` probabilities; cells
/// with probability 0 must be empty.
double chiSquare(const std::vector<int64_t> &counts,
                 const std::vector<double> &expected) {
  double n = std::accumulate(counts.begin(), counts.end(), 0.0), x = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (expected[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " should be excluded";
      continue;
    }
    double e = n * expected[i];
    x += (counts[i] - e) * (counts[i] - e) / e;
  }
  return x;
}

std::vector<double> normalized(std::vector<double> p) {
  double s = std::accumulate(p.begin(), p.end(), 0.0);
  for (double &v : p)
    v /= s;
  return p;
}

// 99.9% quantiles of chi-square with k degrees of freedom.
double critical(int dof) {
  static const std::map<int, double> q = {{1, 10.83}, {2, 13.82}, {3, 16.27},
                                          {4, 18.47}, {5, 20.52}, {6, 22.46},
                                          {7, 24.32}};
  return q.at(dof);
}

} // namespace

TEST(Sampler, TemperatureOneMatchesTheSoftmax) {
  SamplingOptions o;
  o.temperature = 1;
  o.seed = 42;
  std::vector<int64_t> c = draw(o, logitsOf(kProbs));
  EXPECT_LT(chiSquare(c, kProbs), critical(7));
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  for (double t : {0.5, 2.0}) {
    SamplingOptions o;
    o.temperature = t;
    o.seed = 7;
    std::vector<double> expected;
    for (double p : kProbs)
      expected.push_back(std::pow(p, 1 / t));
    std::vector<int64_t> c = draw(o, logitsOf(kProbs));
    EXPECT_LT(chiSquare(c, normalized(expected)), critical(7)) << "T=" << t;
  }
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingOptions o;
  o.temperature = 1;
  o.topK = 3;
  std::vector<int64_t> c = draw(o, logitsOf(kProbs));
  std::vector<double> e = kProbs;
  std::fill(e.begin() + 3, e.end(), 0);
  EXPECT_LT(chiSquare(c, normalized(e)), critical(2));
}

TEST(Sampler, TopPKeepsTheSmallestSetWithThatMass) {
  // 0.30 + 0.20 = 0.50 < 0.6 <= 0.65: three tokens stay.
  SamplingOptions o;
  o.temperature = 1;
  o.topP = 0.6;
  std::vector<int64_t> c = draw(o, logitsOf(kProbs));
  std::vector<double> e = kProbs;
  std::fill(e.begin() + 3, e.end(), 0);
  EXPECT_LT(chiSquare(c, normalized(e)), critical(2));
  // top-p over a large vocabulary (the prefix-growing sort): only the
  // head's tokens are ever drawn.
  std::vector<float> big(50000, -10.0f);
  big[123] = 5;
  big[40000] = 5;
  big[7] = 4;
  o.topP = 0.9;
  Sampler s(o, static_cast<int64_t>(big.size()));
  for (int i = 0; i < 2000; ++i) {
    int64_t t = s.sample(big.data(), i);
    EXPECT_TRUE(t == 123 || t == 40000 || t == 7) << t;
  }
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheBest) {
  // min_p 0.5: p >= 0.15 stays.
  SamplingOptions o;
  o.temperature = 1;
  o.minP = 0.5;
  std::vector<int64_t> c = draw(o, logitsOf(kProbs));
  std::vector<double> e = kProbs;
  std::fill(e.begin() + 3, e.end(), 0);
  EXPECT_LT(chiSquare(c, normalized(e)), critical(2));
}

TEST(Sampler, TruncationsCompose) {
  // top_k 5 then top_p 0.8 of the renormalized five (0.3 0.2 0.15 0.1 0.1
  // / 0.85): 0.353 + 0.235 + 0.176 = 0.765 < 0.8, so four stay; then
  // min_p 0.4 (of 0.353: 0.141) drops the fourth.
  SamplingOptions o;
  o.temperature = 1;
  o.topK = 5;
  o.topP = 0.8;
  o.minP = 0.4;
  std::vector<int64_t> c = draw(o, logitsOf(kProbs));
  std::vector<double> e = kProbs;
  std::fill(e.begin() + 3, e.end(), 0);
  EXPECT_LT(chiSquare(c, normalized(e)), critical(2));
}

TEST(Sampler, GreedyTakesTheLowestIdOnTies) {
  SamplingOptions o;
  std::vector<float> l = {1, 3, 2, 3};
  Sampler s(o, 4);
  EXPECT_EQ(s.sample(l.data(), 0), 1);
}

TEST(Sampler, RepetitionPenaltyDiscouragesSeenTokens) {
  SamplingOptions o;
  o.repetitionPenalty = 2;
  std::vector<float> l = {1.0f, 1.5f, -1.0f};
  Sampler s(o, 3);
  EXPECT_EQ(s.sample(l.data(), 0), 1);
  s.observe(1); // 1.5 -> 0.75 < 1.0
  EXPECT_EQ(s.sample(l.data(), 1), 0);
  s.observe(0); // 1.0 -> 0.5 < 0.75
  EXPECT_EQ(s.sample(l.data(), 2), 1);
  // A negative logit is multiplied: -1 -> -2, never chosen here either.
  std::vector<float> neg = {-1.0f, -1.5f};
  Sampler n(o, 2);
  n.observe(0);
  EXPECT_EQ(n.sample(neg.data(), 0), 1);
}

TEST(Sampler, TheDrawIsAFunctionOfSeedAndIndex) {
  SamplingOptions o;
  o.temperature = 1;
  std::vector<float> l = logitsOf(kProbs);
  o.seed = 5;
  Sampler a(o, 8), b(o, 8);
  std::vector<int64_t> x, y, z;
  for (int i = 0; i < 64; ++i)
    x.push_back(a.sample(l.data(), i));
  for (int i = 63; i >= 0; --i) // any order: no hidden state
    y.insert(y.begin(), b.sample(l.data(), i));
  EXPECT_EQ(x, y);
  o.seed = 6;
  Sampler c(o, 8);
  for (int i = 0; i < 64; ++i)
    z.push_back(c.sample(l.data(), i));
  EXPECT_NE(x, z);
  for (int i = 0; i < 1000; ++i) {
    double u = Sampler::uniform(1, i);
    EXPECT_GE(u, 0);
    EXPECT_LT(u, 1);
  }
}

TEST(Sampler, LogprobsAreTheModelsLogSoftmax) {
  std::vector<float> l = logitsOf(kProbs);
  for (int t = 0; t < 8; ++t)
    EXPECT_NEAR(Sampler::logprob(l.data(), 8, t), std::log(kProbs[t]), 1e-5);
  std::vector<TokenLogprob> top = Sampler::topLogprobs(l.data(), 8, 3);
  ASSERT_EQ(top.size(), 3u);
  // 0.10 appears twice (tokens 3 and 4): the order is best first.
  EXPECT_EQ(top[0].token, 0);
  EXPECT_EQ(top[1].token, 1);
  EXPECT_EQ(top[2].token, 2);
  EXPECT_NEAR(top[1].logprob, std::log(0.2), 1e-5);
  std::vector<TokenLogprob> tie = Sampler::topLogprobs(l.data(), 8, 5);
  EXPECT_EQ(tie[3].token, 3);
  EXPECT_EQ(tie[4].token, 4);
}

TEST(GenerationOptions, EveryBoundIsChecked) {
  auto bad = [](auto mutate, const char *name) {
    GenerationOptions g;
    mutate(g);
    absl::Status s = g.validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(std::string(s.message()).find(name), std::string::npos)
        << s.message();
  };
  bad([](GenerationOptions &g) { g.maxNewTokens = 0; }, "max_new_tokens");
  bad([](GenerationOptions &g) { g.sampling.temperature = -1; }, "temperature");
  bad([](GenerationOptions &g) { g.sampling.temperature = NAN; },
      "temperature");
  bad([](GenerationOptions &g) { g.sampling.topK = -1; }, "top_k");
  bad([](GenerationOptions &g) { g.sampling.topP = 0; }, "top_p");
  bad([](GenerationOptions &g) { g.sampling.topP = 1.5; }, "top_p");
  bad([](GenerationOptions &g) { g.sampling.minP = 2; }, "min_p");
  bad([](GenerationOptions &g) { g.sampling.repetitionPenalty = 0; },
      "repetition_penalty");
  bad([](GenerationOptions &g) { g.logprobs = kMaxTopLogprobs + 1; },
      "logprobs");
  bad([](GenerationOptions &g) { g.stopTokens = {-3}; }, "stop token");
  bad([](GenerationOptions &g) { g.stopTokens.assign(kMaxStopTokens + 1, 1); },
      "stop tokens");
  EXPECT_TRUE(GenerationOptions().validate().ok());
}

namespace {
/// Logits that make `token` the greedy choice.
std::vector<float> favour(int64_t token, int64_t vocab = 16) {
  std::vector<float> l(vocab, 0.0f);
  l[token] = 5;
  return l;
}
} // namespace

TEST(SequenceDecoder, StopsAtLengthStopTokenAndEos) {
  GenerationOptions g;
  g.maxNewTokens = 3;
  SequenceDecoder len({1, 2}, g, nullptr, {}, 16);
  EXPECT_TRUE(len.advance(favour(4).data()));
  EXPECT_EQ(len.nextToken(), 4);
  EXPECT_EQ(len.nextPosition(), 2);
  EXPECT_TRUE(len.advance(favour(5).data()));
  EXPECT_FALSE(len.advance(favour(6).data()));
  GenerationResult r = len.take();
  EXPECT_EQ(r.finishReason, FinishReason::kLength);
  EXPECT_EQ(r.tokens, (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(r.promptTokens, 2);
  EXPECT_EQ(r.completionTokens, 3);

  g.stopTokens = {9};
  SequenceDecoder stop({1}, g, nullptr, {}, 16);
  EXPECT_TRUE(stop.advance(favour(4).data()));
  EXPECT_FALSE(stop.advance(favour(9).data()));
  r = stop.take();
  EXPECT_EQ(r.finishReason, FinishReason::kStop);
  EXPECT_EQ(r.tokens, (std::vector<int64_t>{4})); // the stop token is not kept
  EXPECT_EQ(r.stopToken, 9);
  EXPECT_EQ(r.completionTokens, 2);

  g.stopTokens.clear();
  SequenceDecoder eos({1}, g, nullptr, {11}, 16);
  EXPECT_FALSE(eos.advance(favour(11).data()));
  EXPECT_EQ(eos.take().finishReason, FinishReason::kStop);
  g.ignoreEos = true;
  SequenceDecoder ignored({1}, g, nullptr, {11}, 16);
  EXPECT_TRUE(ignored.advance(favour(11).data()));
}

TEST(SequenceDecoder, StreamsEveryTokenAndStopsWhenTheCallbackSaysSo) {
  GenerationOptions g;
  g.maxNewTokens = 10;
  g.logprobs = 2;
  std::vector<TokenEvent> events;
  SequenceDecoder seq(
      {1}, g,
      [&](const TokenEvent &e) {
        events.push_back(e);
        return events.size() < 3;
      },
      {}, 16);
  EXPECT_TRUE(seq.advance(favour(3).data()));
  EXPECT_TRUE(seq.advance(favour(4).data()));
  EXPECT_FALSE(seq.advance(favour(5).data()));
  GenerationResult r = seq.take();
  EXPECT_EQ(r.finishReason, FinishReason::kStop);
  EXPECT_EQ(r.stopToken, -1);
  ASSERT_EQ(events.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(events[i].token, r.tokens[i]);
    EXPECT_EQ(events[i].index, static_cast<int64_t>(i));
    EXPECT_EQ(events[i].logprob, r.logprobs[i]);
    ASSERT_EQ(events[i].top.size(), 2u);
    EXPECT_EQ(events[i].top[0].token, r.tokens[i]);
  }
  EXPECT_LT(r.logprobs[0], 0);
}

TEST(SequenceDecoder, ACallbackThatThrowsEndsItsSequenceWithAnError) {
  GenerationOptions g;
  SequenceDecoder seq(
      {1}, g,
      [](const TokenEvent &) -> bool { throw std::runtime_error("boom"); }, {},
      16);
  EXPECT_FALSE(seq.advance(favour(3).data()));
  GenerationResult r = seq.take();
  EXPECT_EQ(r.finishReason, FinishReason::kError);
  EXPECT_NE(std::string(r.status.message()).find("boom"), std::string::npos);
}
