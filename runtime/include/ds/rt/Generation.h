//===- Generation.h - sampling, stop conditions and generation results ----===//
//
// What a caller asks of a generation (sampling, stop tokens, a token budget,
// log-probabilities) and what it gets back (tokens, why it ended, counts),
// shared by Session, Batcher and the C API; and the Sampler that turns one
// row of logits into one token.
//
// Sampling is a pure function of (logits row, options, the request's seed,
// the token's index in the output): no generator state is shared between
// requests, so a request's tokens do not depend on its batch, as its logits
// do not (the kernels are batch invariant).
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_GENERATION_H
#define DS_RT_GENERATION_H

#include "absl/status/status.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ds::rt {

/// How the next token is chosen from a row of logits; the defaults are
/// greedy decoding. Applied in this order (vLLM's and llama.cpp's):
/// repetition penalty, temperature, top-k, top-p, min-p, then a draw.
struct SamplingOptions {
  /// 0 (or below kGreedyTemperature): greedy (the most likely token, the
  /// lowest id on ties); otherwise the logits are divided by it.
  /// Bounds: [0, 100].
  double temperature = 0;
  /// Keep only the k most likely tokens (0: all). Bounds: >= 0.
  int64_t topK = 0;
  /// Keep the smallest set of most likely tokens whose probability adds up
  /// to at least p (1: all). Bounds: (0, 1].
  double topP = 1;
  /// Drop tokens less likely than min_p times the most likely one (0: none).
  /// Bounds: [0, 1].
  double minP = 0;
  /// CTRL's penalty on every token of the prompt and of the output so far:
  /// a positive logit is divided by it, a negative one multiplied (1: none).
  /// Bounds: (0, 100].
  double repetitionPenalty = 1;
  /// The request's seed: the same seed, prompt and options give the same
  /// tokens, alone or in any batch.
  uint64_t seed = 0;

  /// InvalidArgument naming the first option outside its bounds.
  absl::Status validate() const;
  /// Below this a temperature is greedy (vLLM's epsilon): dividing by it
  /// would overflow f32.
  static constexpr double kGreedyTemperature = 1e-5;
  bool greedy() const { return temperature < kGreedyTemperature; }
};

/// Why a generation ended.
enum class FinishReason : uint8_t {
  kLength = 0,    ///< max_new_tokens reached (or the KV cache is full)
  kStop = 1,      ///< a stop token or EOS, or the token callback said stop
  kCancelled = 2, ///< cancelled by the caller
  kError = 3,     ///< failed; GenerationResult::status says why
};
/// "length", "stop", "cancelled", "error".
const char *finishReasonName(FinishReason reason);

/// Bounds shared by every entry point that takes GenerationOptions.
inline constexpr int64_t kMaxStopTokens = 64;
inline constexpr int32_t kMaxTopLogprobs = 20;

struct GenerationOptions {
  /// Tokens to generate at most (a stop token counts). Bounds: >= 1 and
  /// room in the KV cache for prompt + max_new_tokens - 1 positions.
  int64_t maxNewTokens = 16;
  SamplingOptions sampling;
  /// Tokens that end the generation besides the model's EOS ids; the stop
  /// token is not part of the result's tokens. At most kMaxStopTokens.
  std::vector<int64_t> stopTokens;
  /// Do not stop at the model's EOS ids (generation_config.json's
  /// eos_token_id, recorded in the artifact).
  bool ignoreEos = false;
  /// -1: no log-probabilities; 0: the chosen token's; n > 0: also the n most
  /// likely alternatives. They are the model's (log-softmax of the raw
  /// logits, before penalty, temperature and truncation), as vLLM reports.
  /// Bounds: [-1, kMaxTopLogprobs].
  int32_t logprobs = -1;

  /// Checks the options that do not depend on the model.
  absl::Status validate() const;
};

struct TokenLogprob {
  int64_t token = 0;
  float logprob = 0;
};

/// One generated token, as the streaming callback sees it.
struct TokenEvent {
  int64_t token = 0;
  int64_t index = 0;             ///< 0 for the first generated token
  float logprob = 0;             ///< when GenerationOptions::logprobs >= 0
  std::vector<TokenLogprob> top; ///< the `logprobs` most likely, best first
};

/// Called after each generated token that is part of the output (not for a
/// stop token), on the thread that runs the step. Return false to end the
/// generation with FinishReason::kStop.
using TokenCallback = std::function<bool(const TokenEvent &)>;

struct GenerationResult {
  absl::Status status; ///< why, when finishReason is kError
  FinishReason finishReason = FinishReason::kLength;
  std::vector<int64_t> tokens; ///< generated, without a stop token
  int64_t stopToken = -1;      ///< the stop / EOS token that ended it
  int64_t promptTokens = 0;
  /// Tokens the model produced, a stop token included (OpenAI's usage).
  int64_t completionTokens = 0;
  /// Per token of `tokens`, when logprobs >= 0.
  std::vector<float> logprobs;
  std::vector<std::vector<TokenLogprob>> topLogprobs;

  static GenerationResult error(absl::Status status, int64_t promptTokens);
};

/// Chooses tokens for one sequence. Holds the sequence's seen-token set for
/// the repetition penalty and scratch sized to the vocabulary (allocated
/// once per sequence, reused for every token).
class Sampler {
public:
  Sampler(const SamplingOptions &options, int64_t vocab);
  /// Records tokens of the prompt or of the output (repetition penalty).
  void observe(int64_t token);
  /// The token for output index `index` from `logits` [vocab].
  int64_t sample(const float *logits, int64_t index);
  /// The model's log-probability of `token` and the `n` most likely tokens
  /// (best first, lowest id first on ties).
  static float logprob(const float *logits, int64_t vocab, int64_t token);
  static std::vector<TokenLogprob> topLogprobs(const float *logits,
                                               int64_t vocab, int32_t n);
  /// The uniform [0, 1) draw of output index `index` under `seed`.
  static double uniform(uint64_t seed, int64_t index);

private:
  SamplingOptions options;
  int64_t vocab;
  std::vector<uint8_t> seen; ///< only with a repetition penalty
  std::vector<float> scaled; ///< logits after penalty and temperature
  std::vector<int32_t> order;
};

/// One sequence's generation, step by step: feed it the logits of the
/// sequence's last row, it picks the next token, applies the stop
/// conditions and calls the token callback. Session::generate and the
/// Batcher drive it the same way, so a request behaves the same in both.
class SequenceDecoder {
public:
  /// `eos`: the model's EOS ids (ignored with options.ignoreEos).
  SequenceDecoder(std::vector<int64_t> prompt, const GenerationOptions &options,
                  TokenCallback onToken, const std::vector<int64_t> &eos,
                  int64_t vocab);

  const std::vector<int64_t> &prompt() const { return prompt_; }
  /// The input of the next step: the last generated token at its position.
  int64_t nextToken() const { return result_.tokens.back(); }
  int64_t nextPosition() const {
    return static_cast<int64_t>(prompt_.size() + result_.tokens.size()) - 1;
  }
  bool finished() const { return done; }

  /// Consumes the logits [vocab] of the sequence's last row. Returns true
  /// while the sequence wants another step.
  bool advance(const float *logits);
  /// Ends it now (cancelled, or an error when `status` is not OK).
  void finish(FinishReason reason, absl::Status status = absl::OkStatus());
  /// The result so far (complete once finished()).
  const GenerationResult &result() const { return result_; }
  /// Moves the result out; once finished().
  GenerationResult take() { return std::move(result_); }

private:
  std::vector<int64_t> prompt_;
  GenerationOptions options;
  TokenCallback onToken;
  std::vector<int64_t> stops;
  int64_t vocab;
  Sampler sampler;
  GenerationResult result_;
  bool done = false;
};

} // namespace ds::rt

#endif // DS_RT_GENERATION_H
