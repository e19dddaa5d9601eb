//===- TinyModel.h - small random Hugging Face checkpoints ------*- C++ -*-===//
//
// Writes a config.json and random safetensors weights with the real tensor
// names and layouts of each supported family, at sizes of a few hundred KB:
// the fixture for tests and the demo. Deterministic in the seed.
//
//===----------------------------------------------------------------------===//

#ifndef DS_FRONTENDS_HF_TINYMODEL_H
#define DS_FRONTENDS_HF_TINYMODEL_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace ds::hf {

struct TinyModelOptions {
  /// deepseek_v3, deepseek_v2, mixtral, qwen2_moe or qwen3_moe.
  std::string arch;
  std::string outDir;
  uint64_t seed = 0;
  /// Write experts in the fused v5 layout (gate_up_proj / down_proj).
  bool fusedExperts = false;
  /// Split the weights over this many shards with an index file.
  int shards = 1;
  /// Weight dtype on disk: F32, BF16 or F16.
  std::string dtype = "F32";
  /// > 0: every projection, expert and embedding weight is N(0, initStd^2),
  /// as Hugging Face's `initializer_range` initializes them (routers keep
  /// their decisive scale). 0: 1/sqrt(fan_in) projections, N(0, 1)
  /// embeddings.
  float initStd = 0.0f;
  /// DeepSeek only: write the decoder projections and experts in FP8 e4m3
  /// with `weight_scale_inv` block scales and a quantization_config, like
  /// the released DeepSeek-V3 checkpoints (blocks of 32 here, 128 there).
  bool fp8 = false;
  /// Decoder layers (0: the family's tiny default, 2 or 3) and routed
  /// experts (0: 8; a multiple of 4 for DeepSeek's 4 groups): the real
  /// structure of a large model at tiny widths.
  int64_t layers = 0, experts = 0;
};

llvm::Error writeTinyModel(const TinyModelOptions &options);

} // namespace ds::hf

#endif // DS_FRONTENDS_HF_TINYMODEL_H
