//===- ModelConfig.h - Hugging Face config.json for MoE LMs -----*- C++ -*-===//
//
// The parsed, validated config.json of a DeepSeek-V3/V2, Mixtral, Qwen2-MoE
// or Qwen3-MoE causal LM: every field that changes the forward math, with
// Hugging Face's defaults. Values ds cannot honour are rejected with an error
// naming the file and the field, never ignored.
//
//===----------------------------------------------------------------------===//

#ifndef DS_FRONTENDS_HF_MODELCONFIG_H
#define DS_FRONTENDS_HF_MODELCONFIG_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSAttrs.h"

#include "llvm/Support/Error.h"

#include <optional>
#include <string>
#include <vector>

namespace ds::hf {

enum class Arch { DeepSeekV3, DeepSeekV2, Mixtral, Qwen2Moe, Qwen3Moe };

/// The Hugging Face model_type ("deepseek_v3", "mixtral", ...).
llvm::StringRef archName(Arch arch);

struct RopeConfig {
  double theta = 10000.0;
  RopeScaling scaling = RopeScaling::none;
  double factor = 1.0;
  int64_t originalMaxPosition = 0;
  double betaFast = 32.0, betaSlow = 1.0;
  double mscale = 0.0, mscaleAllDim = 0.0, attentionFactor = 0.0;
  bool truncate = true;
};

struct ModelConfig {
  Arch arch;
  std::string path; ///< config.json, for messages

  int64_t vocabSize = 0, hiddenSize = 0, numLayers = 0;
  /// Tokens that end generation (eos_token_id of config.json, overridden by
  /// generation_config.json's).
  std::vector<int64_t> eosTokenIds;
  int64_t numHeads = 0, numKvHeads = 0, headDim = 0;
  double rmsNormEps = 1e-6;
  bool tieWordEmbeddings = false;
  /// DeepSeek-V3-style FP8 checkpoints (quantization_config quant_method
  /// "fp8", e4m3, dynamic activations): the weight block [rows, cols] that
  /// one `weight_scale_inv` entry covers.
  std::optional<std::pair<int64_t, int64_t>> fp8WeightBlock;
  Activation hiddenAct = Activation::silu;
  int64_t maxPositionEmbeddings = 4096;
  std::optional<int64_t> slidingWindow;
  RopeConfig rope;

  // Attention projections.
  bool qkvBias = false; ///< q/k/v biases (Qwen2)
  bool attentionBias =
      false;           ///< all projections (Qwen3 incl. o; DeepSeek q_a/kv_a/o)
  bool qkNorm = false; ///< Qwen3 per-head RMSNorm on q and k

  // Dense and MoE feed-forward.
  int64_t intermediateSize = 0;    ///< dense MLP width
  int64_t moeIntermediateSize = 0; ///< per routed expert
  int64_t numExperts = 0, topK = 0;
  int64_t sharedIntermediateSize = 0; ///< 0: no shared expert
  bool sharedExpertGate = false;      ///< Qwen2-MoE sigmoid gate
  ScoringFunc scoring = ScoringFunc::softmax;
  bool normTopkProb = false;
  double normEpsilon = 0.0;
  double routedScalingFactor = 1.0;
  int64_t nGroup = 1, topkGroup = 1;
  GroupScore groupScore = GroupScore::max;
  bool scoreCorrectionBias = false;
  std::vector<bool> moeLayers; ///< per layer: MoE (true) or dense

  // Multi-head latent attention (DeepSeek).
  int64_t qLoraRank = 0; ///< 0: a direct q_proj
  int64_t kvLoraRank = 0, qkNopeHeadDim = 0, qkRopeHeadDim = 0, vHeadDim = 0;
  RopeStyle ropeStyle = RopeStyle::rotate_half;

  bool isMLA() const {
    return arch == Arch::DeepSeekV3 || arch == Arch::DeepSeekV2;
  }
  /// The softmax scale of attention (MLA includes YaRN's mscale^2).
  double attentionScale() const;
};

/// Parses `text` (the contents of `path`).
llvm::Expected<ModelConfig> parseModelConfig(llvm::StringRef text,
                                             llvm::StringRef path);

/// Applies generation_config.json's `eos_token_id` (one id or a list) to
/// `config` (it overrides config.json's).
llvm::Error applyGenerationConfig(llvm::StringRef text, llvm::StringRef path,
                                  ModelConfig &config);

/// Reads and parses `dir`/config.json, then `dir`/generation_config.json
/// when present.
llvm::Expected<ModelConfig> loadModelConfig(llvm::StringRef dir);

} // namespace ds::hf

#endif // DS_FRONTENDS_HF_MODELCONFIG_H
