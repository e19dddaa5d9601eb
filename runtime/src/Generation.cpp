//===- Generation.cpp - sampling and generation options -------------------===//
//
// The sampler works on one row of logits at a time. Probabilities are kept
// as unnormalized weights exp(x - max) in float, summed in double in a fixed
// order (id order, or best-first when a truncation needs the order), so a
// draw depends only on the row, the options and the draw's uniform value.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Generation.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ds::rt {

const char *finishReasonName(FinishReason reason) {
  switch (reason) {
  case FinishReason::kLength:
    return "length";
  case FinishReason::kStop:
    return "stop";
  case FinishReason::kCancelled:
    return "cancelled";
  case FinishReason::kError:
    return "error";
  }
  return "unknown";
}

absl::Status SamplingOptions::validate() const {
  // Written so that NaN fails every check.
  if (!(temperature >= 0 && temperature <= 100))
    return absl::InvalidArgumentError(
        absl::StrCat("temperature ", temperature, " is outside [0, 100]"));
  if (topK < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("top_k ", topK, " is negative (0 keeps every token)"));
  if (!(topP > 0 && topP <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("top_p ", topP, " is outside (0, 1]"));
  if (!(minP >= 0 && minP <= 1))
    return absl::InvalidArgumentError(
        absl::StrCat("min_p ", minP, " is outside [0, 1]"));
  if (!(repetitionPenalty > 0 && repetitionPenalty <= 100))
    return absl::InvalidArgumentError(absl::StrCat(
        "repetition_penalty ", repetitionPenalty, " is outside (0, 100]"));
  return absl::OkStatus();
}

absl::Status GenerationOptions::validate() const {
  if (maxNewTokens < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens must be at least 1; got ", maxNewTokens));
  if (static_cast<int64_t>(stopTokens.size()) > kMaxStopTokens)
    return absl::InvalidArgumentError(
        absl::StrCat(stopTokens.size(), " stop tokens; at most ",
                     kMaxStopTokens, " are accepted"));
  for (int64_t t : stopTokens)
    if (t < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("stop token ", t, " is negative"));
  if (logprobs < -1 || logprobs > kMaxTopLogprobs)
    return absl::InvalidArgumentError(absl::StrCat(
        "logprobs ", logprobs, " is outside [-1, ", kMaxTopLogprobs, "]"));
  return sampling.validate();
}

GenerationResult GenerationResult::error(absl::Status status,
                                         int64_t promptTokens) {
  GenerationResult r;
  r.status = std::move(status);
  r.finishReason = FinishReason::kError;
  r.promptTokens = promptTokens;
  return r;
}

Sampler::Sampler(const SamplingOptions &options, int64_t vocab)
    : options(options), vocab(vocab) {
  if (options.repetitionPenalty != 1)
    seen.assign(vocab, 0);
  if (!options.greedy() || options.repetitionPenalty != 1)
    scaled.resize(vocab);
}

void Sampler::observe(int64_t token) {
  if (!seen.empty() && token >= 0 && token < vocab)
    seen[token] = 1;
}

double Sampler::uniform(uint64_t seed, int64_t index) {
  // SplitMix64 of (seed, index): a counter-based draw, so no generator
  // state is carried from one token (or request) to the next.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  uint64_t bits = mix(seed ^ mix(static_cast<uint64_t>(index)));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int64_t Sampler::sample(const float *logits, int64_t index) {
  const float *x = logits;
  if (!scaled.empty()) {
    float inv =
        options.greedy() ? 1.0f : static_cast<float>(1.0 / options.temperature);
    float r = static_cast<float>(options.repetitionPenalty);
    for (int64_t i = 0; i < vocab; ++i) {
      float v = logits[i];
      if (!seen.empty() && seen[i])
        v = v > 0 ? v / r : v * r;
      scaled[i] = v * inv;
    }
    x = scaled.data();
  }
  if (options.greedy())
    return std::max_element(x, x + vocab) - x;

  float max = *std::max_element(x, x + vocab);
  // Unnormalized probabilities, in place.
  float *w = scaled.data();
  for (int64_t i = 0; i < vocab; ++i)
    w[i] = std::exp(x[i] - max);

  auto better = [w](int32_t a, int32_t b) {
    return w[a] > w[b] || (w[a] == w[b] && a < b);
  };
  bool ordered = options.topK > 0 || options.topP < 1;
  int64_t kept = vocab;
  if (ordered) {
    order.resize(vocab);
    std::iota(order.begin(), order.end(), 0);
    int64_t n = options.topK > 0 ? std::min(options.topK, vocab) : vocab;
    double total = 0;
    if (n < vocab) {
      std::partial_sort(order.begin(), order.begin() + n, order.end(), better);
      for (int64_t i = 0; i < n; ++i)
        total += w[order[i]];
    } else {
      for (int64_t i = 0; i < vocab; ++i)
        total += w[i];
    }
    kept = n;
    if (options.topP < 1) {
      // Sort a growing prefix until it holds top_p of the mass: a full
      // sort of a 100K+ vocabulary per token is rarely needed.
      double target = options.topP * total;
      for (int64_t k = std::min<int64_t>(64, n);; k = std::min(k * 8, n)) {
        // With top-k the first n are sorted already.
        if (n == vocab && k < n)
          std::partial_sort(order.begin(), order.begin() + k, order.end(),
                            better);
        else if (n == vocab)
          std::sort(order.begin(), order.end(), better);
        double cum = 0;
        int64_t cut = -1;
        for (int64_t i = 0; i < k; ++i) {
          cum += w[order[i]];
          if (cum >= target) {
            cut = i + 1;
            break;
          }
        }
        if (cut > 0 || k == n) {
          kept = cut > 0 ? cut : n;
          break;
        }
      }
    }
  }
  auto id = [&](int64_t i) -> int64_t { return ordered ? order[i] : i; };
  // min-p: relative to the most likely token, whose weight is exp(0) = 1.
  float floor = static_cast<float>(options.minP);
  double total = 0;
  for (int64_t i = 0; i < kept; ++i)
    if (w[id(i)] >= floor)
      total += w[id(i)];
  double target = uniform(options.seed, index) * total, cum = 0;
  int64_t last = id(0);
  for (int64_t i = 0; i < kept; ++i) {
    int64_t t = id(i);
    if (w[t] < floor)
      continue;
    cum += w[t];
    last = t;
    if (cum > target)
      return t;
  }
  return last; // rounding left the target at the very end
}

namespace {
double logSumExp(const float *logits, int64_t vocab);
} // namespace

float Sampler::logprob(const float *logits, int64_t vocab, int64_t token) {
  return static_cast<float>(logits[token] - logSumExp(logits, vocab));
}

namespace {
/// log(sum(exp(logits - max))) + max, summed in double in id order: one
/// definition for the chosen token's logprob and the top list's, so a
/// token gets the same value in both.
double logSumExp(const float *logits, int64_t vocab) {
  float max = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i)
    sum += std::exp(static_cast<double>(logits[i] - max));
  return max + std::log(sum);
}
} // namespace

std::vector<TokenLogprob> Sampler::topLogprobs(const float *logits,
                                               int64_t vocab, int32_t n) {
  n = static_cast<int32_t>(std::min<int64_t>(n, vocab));
  if (n <= 0)
    return {};
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(
      ids.begin(), ids.begin() + n, ids.end(), [logits](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
      });
  double lse = logSumExp(logits, vocab);
  std::vector<TokenLogprob> out(n);
  for (int32_t i = 0; i < n; ++i)
    out[i] = {ids[i], static_cast<float>(logits[ids[i]] - lse)};
  return out;
}

SequenceDecoder::SequenceDecoder(std::vector<int64_t> prompt,
                                 const GenerationOptions &options,
                                 TokenCallback onToken,
                                 const std::vector<int64_t> &eos, int64_t vocab)
    : prompt_(std::move(prompt)), options(options), onToken(std::move(onToken)),
      stops(options.stopTokens), vocab(vocab),
      sampler(options.sampling, vocab) {
  if (!options.ignoreEos)
    stops.insert(stops.end(), eos.begin(), eos.end());
  for (int64_t t : prompt_)
    sampler.observe(t);
  result_.promptTokens = static_cast<int64_t>(prompt_.size());
}

void SequenceDecoder::finish(FinishReason reason, absl::Status status) {
  if (done)
    return;
  done = true;
  result_.finishReason = reason;
  result_.status = std::move(status);
}

bool SequenceDecoder::advance(const float *logits) {
  if (done)
    return false;
  int64_t index = result_.completionTokens;
  int64_t token = sampler.sample(logits, index);
  ++result_.completionTokens;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
    result_.stopToken = token;
    finish(FinishReason::kStop);
    return false;
  }
  sampler.observe(token);
  result_.tokens.push_back(token);
  TokenEvent event;
  event.token = token;
  event.index = index;
  if (options.logprobs >= 0) {
    event.logprob = Sampler::logprob(logits, vocab, token);
    event.top = Sampler::topLogprobs(logits, vocab, options.logprobs);
    result_.logprobs.push_back(event.logprob);
    result_.topLogprobs.push_back(event.top);
  }
  if (onToken) {
    bool more = false;
    try {
      more = onToken(event);
    } catch (const std::exception &e) {
      finish(FinishReason::kError,
             absl::InternalError(
                 absl::StrCat("the token callback threw: ", e.what())));
      return false;
    } catch (...) {
      finish(FinishReason::kError,
             absl::InternalError("the token callback threw"));
      return false;
    }
    if (!more) {
      finish(FinishReason::kStop);
      return false;
    }
  }
  if (result_.completionTokens >= options.maxNewTokens) {
    finish(FinishReason::kLength);
    return false;
  }
  return true;
}

} // namespace ds::rt
