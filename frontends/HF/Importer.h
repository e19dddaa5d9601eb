//===- Importer.h - Hugging Face checkpoint to ds IR ------------*- C++ -*-===//
//
// Turns a Hugging Face model directory (config.json + safetensors) into a ds
// module of the whole causal LM with two entry points:
//
//   @prefill(tokens [B, S] i64, positions [B, S] i64, caches...)
//       -> (logits [B, S, V], caches...)
//   @decode(tokens [B, 1] i64, positions [B, 1] i64, caches...)
//       -> (logits [B, 1, V], caches...)
//
// Caches are per layer: post-RoPE K and V [B, max_cache_len, Hkv, D], or for
// MLA the normalized latent [B, max_cache_len, kv_lora_rank] and the rotated
// shared key [B, max_cache_len, qk_rope_head_dim]. Weights are ds.param ops
// naming the checkpoint tensors; every tensor the IR names is checked to
// exist with the shape the config implies.
//
//===----------------------------------------------------------------------===//

#ifndef DS_FRONTENDS_HF_IMPORTER_H
#define DS_FRONTENDS_HF_IMPORTER_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/frontends/HF/ModelConfig.h"

#include "ds/support/SafeTensors.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <functional>

namespace ds::hf {

struct ImportOptions {
  /// Capacity of each layer's KV cache (0: min(max_position_embeddings,
  /// 4096)).
  int64_t maxCacheLen = 0;
  /// Element type of activations and weights in the IR: f32, f16 or bf16.
  std::string dtype = "f32";
  /// Called as each layer is emitted (for progress lines on big models).
  std::function<void(int64_t layer, int64_t numLayers)> progress;
};

/// Imports `config` with weights from `checkpoint`; errors are emitted as
/// diagnostics and yield a null module.
OwningOpRef<ModuleOp> importModel(MLIRContext &context,
                                  const ModelConfig &config,
                                  const ds::Checkpoint &checkpoint,
                                  const ImportOptions &options = {});

/// Loads `dir` (config.json and its safetensors) and imports it.
OwningOpRef<ModuleOp> importModelDirectory(MLIRContext &context,
                                           llvm::StringRef dir,
                                           const ImportOptions &options = {});

} // namespace ds::hf

#endif // DS_FRONTENDS_HF_IMPORTER_H
