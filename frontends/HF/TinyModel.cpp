//===- TinyModel.cpp - small random Hugging Face checkpoints --------------===//
//
// Sizes are chosen to exercise every feature of each family (GQA, explicit
// head_dim, q/k/v biases, QK-norm, MLA with a low-rank query, YaRN, grouped
// routing with a correction bias, dense-then-MoE layers, shared experts) while
// keeping the interpreter fast. Router weights are scaled up so that top-k
// choices are not near ties.
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/TinyModel.h"

#include "ds/support/Quant.h"
#include "ds/support/SafeTensors.h"
#include "ds/tok/Tokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>
#include <cstring>
#include <map>
#include <random>

using namespace ds::hf;
namespace json = llvm::json;

namespace {

class TinyWriter {
public:
  TinyWriter(const TinyModelOptions &o) : opts(o), rng(o.seed) {}

  llvm::Error write();

private:
  float normal() {
    // Box-Muller on a portable engine: identical on every platform.
    double u1 = (static_cast<double>(rng() >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (static_cast<double>(rng() >> 11) + 0.5) / 9007199254740992.0;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) *
                              std::cos(2.0 * M_PI * u2));
  }
  void tensor(const std::string &name, std::vector<int64_t> shape, float std,
              float mean = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    std::vector<float> values(n);
    for (float &v : values)
      v = mean + std * normal();
    tensors.push_back({name, std::move(shape), std::move(values)});
  }
  void linear(const std::string &name, int64_t out, int64_t in,
              bool bias = false) {
    tensor(name + ".weight", {out, in}, weightStd(in));
    if (bias)
      tensor(name + ".bias", {out}, 0.1f);
  }
  /// Projection weights: 1/sqrt(fan_in) (every sublayer as large as the
  /// residual stream), or Hugging Face's initializer_range.
  float weightStd(int64_t fanIn) const {
    return opts.initStd > 0.0f ? opts.initStd : 1.0f / std::sqrt(float(fanIn));
  }
  void norm(const std::string &name, int64_t dim) {
    tensor(name, {dim}, 0.1f, 1.0f);
  }
  void mlp(const std::string &p, int64_t h, int64_t i,
           const char *g = "gate_proj", const char *u = "up_proj",
           const char *d = "down_proj") {
    linear(p + g, i, h);
    linear(p + u, i, h);
    linear(p + d, h, i);
  }
  void experts(const std::string &p, int64_t e, int64_t h, int64_t i,
               bool mixtral) {
    if (opts.fusedExperts) {
      tensor(p + "experts.gate_up_proj", {e, 2 * i, h}, weightStd(h));
      tensor(p + "experts.down_proj", {e, h, i}, weightStd(i));
      return;
    }
    for (int64_t x = 0; x < e; ++x) {
      std::string q = p + "experts." + std::to_string(x) + ".";
      if (mixtral)
        mlp(q, h, i, "w1", "w3", "w2");
      else
        mlp(q, h, i);
    }
  }

  struct Pending {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
  };
  const TinyModelOptions &opts;
  std::mt19937_64 rng;
  std::vector<Pending> tensors;
};

llvm::Error TinyWriter::write() {
  const std::string &arch = opts.arch;
  const int64_t vocab = 256, hidden = 64, heads = 4;
  const int64_t numExperts = opts.experts > 0 ? opts.experts : 8;
  json::Object config{
      {"vocab_size", vocab},
      {"hidden_size", hidden},
      {"num_attention_heads", heads},
      {"hidden_act", "silu"},
      {"max_position_embeddings", 256},
      {"tie_word_embeddings", false},
      {"torch_dtype", "float32"},
      {"initializer_range", opts.initStd > 0.0f ? opts.initStd : 0.02},
  };
  tensor("model.embed_tokens.weight", {vocab, hidden},
         opts.initStd > 0.0f ? opts.initStd : 1.0f);
  int64_t layers = opts.layers > 0 ? opts.layers : 2;
  if (arch == "deepseek_v3" || arch == "deepseek_v2") {
    bool v3 = arch == "deepseek_v3";
    const int64_t r = 24, c = 32, dn = 16, dr = 8, dv = 16, mi = 32;
    layers = opts.layers > 0 ? opts.layers : 3;
    config["model_type"] = arch;
    config["architectures"] =
        json::Array{v3 ? "DeepseekV3ForCausalLM" : "DeepseekV2ForCausalLM"};
    config.insert({"num_hidden_layers", layers});
    config.insert({"num_key_value_heads", heads});
    config.insert({"intermediate_size", 96});
    config.insert({"moe_intermediate_size", mi});
    config.insert({"n_routed_experts", numExperts});
    config.insert({"n_shared_experts", 1});
    config.insert({"num_experts_per_tok", 2});
    config.insert({"first_k_dense_replace", 1});
    config.insert({"moe_layer_freq", 1});
    config.insert({"q_lora_rank", r});
    config.insert({"kv_lora_rank", c});
    config.insert({"qk_nope_head_dim", dn});
    config.insert({"qk_rope_head_dim", dr});
    config.insert({"v_head_dim", dv});
    config.insert({"rms_norm_eps", 1e-6});
    config.insert({"rope_theta", 10000.0});
    config.insert({"attention_bias", false});
    if (v3) {
      config.insert({"n_group", 4});
      config.insert({"topk_group", 2});
      config.insert({"norm_topk_prob", true});
      config.insert({"routed_scaling_factor", 2.5});
      config.insert({"scoring_func", "sigmoid"});
      config.insert({"topk_method", "noaux_tc"});
      config.insert({"rope_interleave", true});
      // YaRN with max_position_embeddings = factor * original so that every
      // transformers version computes the same frequencies.
      config.insert({"rope_scaling",
                     json::Object{{"type", "yarn"},
                                  {"factor", 4.0},
                                  {"original_max_position_embeddings", 64},
                                  {"beta_fast", 32.0},
                                  {"beta_slow", 1.0},
                                  {"mscale", 1.0},
                                  {"mscale_all_dim", 1.0}}});
    } else {
      config.insert({"topk_method", "greedy"});
      config.insert({"norm_topk_prob", false});
      config.insert({"routed_scaling_factor", 1.5});
      config.insert({"scoring_func", "softmax"});
    }
    for (int64_t l = 0; l < layers; ++l) {
      std::string p = llvm::formatv("model.layers.{0}.", l).str();
      norm(p + "input_layernorm.weight", hidden);
      norm(p + "post_attention_layernorm.weight", hidden);
      std::string a = p + "self_attn.";
      linear(a + "q_a_proj", r, hidden);
      norm(a + "q_a_layernorm.weight", r);
      linear(a + "q_b_proj", heads * (dn + dr), r);
      linear(a + "kv_a_proj_with_mqa", c + dr, hidden);
      norm(a + "kv_a_layernorm.weight", c);
      linear(a + "kv_b_proj", heads * (dn + dv), c);
      linear(a + "o_proj", hidden, heads * dv);
      if (l == 0) {
        mlp(p + "mlp.", hidden, 96);
        continue;
      }
      tensor(p + "mlp.gate.weight", {numExperts, hidden},
             4.0f / std::sqrt(float(hidden)));
      if (v3)
        tensor(p + "mlp.gate.e_score_correction_bias", {numExperts}, 0.05f);
      experts(p + "mlp.", numExperts, hidden, mi, false);
      mlp(p + "mlp.shared_experts.", hidden, mi);
    }
  } else if (arch == "mixtral" || arch == "qwen2_moe" || arch == "qwen3_moe") {
    bool mixtral = arch == "mixtral", qwen3 = arch == "qwen3_moe";
    const int64_t kvHeads = qwen3 || mixtral ? 2 : heads;
    const int64_t headDim = qwen3 ? 24 : hidden / heads;
    const int64_t mi = 32, shared = 48;
    config["model_type"] = arch;
    config["architectures"] = json::Array{
        mixtral ? "MixtralForCausalLM"
                : (qwen3 ? "Qwen3MoeForCausalLM" : "Qwen2MoeForCausalLM")};
    config.insert({"num_hidden_layers", layers});
    config.insert({"num_key_value_heads", kvHeads});
    config.insert({"rms_norm_eps", mixtral ? 1e-5 : 1e-6});
    config.insert({"rope_theta", mixtral ? 1e6 : 10000.0});
    if (mixtral) {
      config.insert({"intermediate_size", mi});
      config.insert({"num_local_experts", numExperts});
      config.insert({"num_experts_per_tok", 2});
      config.insert({"sliding_window", nullptr});
    } else {
      config.insert({"intermediate_size", 96});
      config.insert({"moe_intermediate_size", mi});
      config.insert({"num_experts", numExperts});
      config.insert({"num_experts_per_tok", qwen3 ? 2 : 4});
      config.insert({"norm_topk_prob", qwen3});
      config.insert({"decoder_sparse_step", 1});
      config.insert({"mlp_only_layers", json::Array{}});
      config.insert({"use_sliding_window", false});
      if (qwen3) {
        config.insert({"head_dim", headDim});
        config.insert({"attention_bias", false});
      } else {
        config.insert({"shared_expert_intermediate_size", shared});
      }
    }
    for (int64_t l = 0; l < layers; ++l) {
      std::string p = llvm::formatv("model.layers.{0}.", l).str();
      norm(p + "input_layernorm.weight", hidden);
      norm(p + "post_attention_layernorm.weight", hidden);
      std::string a = p + "self_attn.";
      bool bias = arch == "qwen2_moe";
      linear(a + "q_proj", heads * headDim, hidden, bias);
      linear(a + "k_proj", kvHeads * headDim, hidden, bias);
      linear(a + "v_proj", kvHeads * headDim, hidden, bias);
      linear(a + "o_proj", hidden, heads * headDim);
      if (qwen3) {
        norm(a + "q_norm.weight", headDim);
        norm(a + "k_norm.weight", headDim);
      }
      std::string m =
          p + (mixtral && !opts.fusedExperts ? "block_sparse_moe." : "mlp.");
      tensor(m + "gate.weight", {numExperts, hidden},
             4.0f / std::sqrt(float(hidden)));
      experts(m, numExperts, hidden, mi, mixtral);
      if (arch == "qwen2_moe") {
        mlp(p + "mlp.shared_expert.", hidden, shared);
        linear(p + "mlp.shared_expert_gate", 1, hidden);
      }
    }
  } else {
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "unknown --arch '" + arch +
            "' (deepseek_v3, deepseek_v2, mixtral, qwen2_moe, qwen3_moe)");
  }
  norm("model.norm.weight", hidden);
  linear("lm_head", vocab, hidden);

  std::optional<ds::DType> dtype = ds::parseDType(opts.dtype);
  if (!dtype || !ds::isFloatDType(*dtype) || *dtype == ds::DType::F8E4M3 ||
      *dtype == ds::DType::F64)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "--dtype must be F32, BF16 or F16");
  config["torch_dtype"] = *dtype == ds::DType::F32    ? "float32"
                          : *dtype == ds::DType::BF16 ? "bfloat16"
                                                      : "float16";
  if (std::error_code ec = llvm::sys::fs::create_directories(opts.outDir))
    return llvm::createStringError(ec, opts.outDir + ": " + ec.message());

  // DeepSeek-V3 FP8 layout: decoder projections and experts as e4m3 with
  // F32 `weight_scale_inv` blocks (embeddings, norms, routers and the output
  // head stay in the checkpoint dtype). Blocks of 32 so that tiny matrices
  // still have several, some partial.
  std::vector<ds::TensorToWrite> fp8Tensors;
  if (opts.fp8) {
    if (arch != "deepseek_v3" && arch != "deepseek_v2")
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "--fp8 writes DeepSeek FP8 checkpoints "
                                     "(deepseek_v3, deepseek_v2)");
    const int64_t block = 32;
    config["quantization_config"] =
        json::Object{{"quant_method", "fp8"},
                     {"fmt", "e4m3"},
                     {"activation_scheme", "dynamic"},
                     {"weight_block_size", json::Array{block, block}}};
    std::vector<Pending> kept;
    for (Pending &p : tensors) {
      llvm::StringRef name = p.name;
      bool quantized =
          p.shape.size() == 2 && name.starts_with("model.layers.") &&
          name.ends_with("_proj.weight") && !name.ends_with("mlp.gate.weight");
      if (!quantized) {
        kept.push_back(std::move(p));
        continue;
      }
      ds::QuantizedTensor q = ds::quantize(
          p.values.data(), p.shape, {ds::QStorage::F8E4M3, {block, block}});
      fp8Tensors.push_back(
          {p.name, ds::DType::F8E4M3, p.shape, ds::encodeValues(q)});
      std::vector<uint8_t> scales(q.scales.size() * 4);
      std::memcpy(scales.data(), q.scales.data(), scales.size());
      fp8Tensors.push_back({p.name + "_scale_inv", ds::DType::F32,
                            ds::scaleShape(p.shape, {block, block}),
                            std::move(scales)});
    }
    tensors = std::move(kept);
  }

  int shards = std::max(1, opts.shards);
  std::vector<std::vector<ds::TensorToWrite>> perShard(shards);
  json::Object weightMap;
  for (size_t t = 0; t < tensors.size(); ++t) {
    Pending &p = tensors[t];
    ds::TensorToWrite w{p.name, *dtype, p.shape, {}};
    w.bytes.resize(p.values.size() * ds::dtypeSize(*dtype));
    for (size_t i = 0; i < p.values.size(); ++i) {
      if (*dtype == ds::DType::F32) {
        std::memcpy(&w.bytes[i * 4], &p.values[i], 4);
      } else {
        uint16_t bits = *dtype == ds::DType::BF16
                            ? ds::floatToBF16(p.values[i])
                            : ds::floatToHalf(p.values[i]);
        std::memcpy(&w.bytes[i * 2], &bits, 2);
      }
    }
    int shard = static_cast<int>(t * shards / tensors.size());
    std::string file = shards == 1
                           ? "model.safetensors"
                           : llvm::formatv("model-{0:5}-of-{1:5}.safetensors",
                                           shard + 1, shards)
                                 .str();
    for (char &ch : file)
      if (ch == ' ')
        ch = '0';
    weightMap[p.name] = file;
    perShard[shard].push_back(std::move(w));
  }
  for (ds::TensorToWrite &t : fp8Tensors) {
    weightMap[t.name] =
        shards == 1 ? "model.safetensors"
                    : weightMap[perShard[0].front().name].getAsString()->str();
    perShard[0].push_back(std::move(t));
  }
  for (int s = 0; s < shards; ++s) {
    std::string file = weightMap[perShard[s].front().name].getAsString()->str();
    if (absl::Status st = ds::writeSafeTensors(opts.outDir + "/" + file,
                                               perShard[s], {{"format", "pt"}});
        !st.ok())
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     std::string(st.message()));
  }
  if (shards > 1) {
    json::Object index{{"metadata", json::Object{}},
                       {"weight_map", std::move(weightMap)}};
    std::string text;
    llvm::raw_string_ostream os(text);
    os << llvm::formatv("{0:2}", json::Value(std::move(index)));
    if (absl::Status st = ds::writeFileAtomically(
            opts.outDir + "/model.safetensors.index.json", text);
        !st.ok())
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     std::string(st.message()));
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", json::Value(std::move(config))) << "\n";
  if (absl::Status st =
          ds::writeFileAtomically(opts.outDir + "/config.json", text);
      !st.ok())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   std::string(st.message()));
  // A byte-level tokenizer over the 256-token vocabulary (one token a
  // byte), so that text goes in and out of the tiny models end to end.
  json::Object tokenizerConfig{{"tokenizer_class", "PreTrainedTokenizerFast"},
                               {"add_bos_token", false},
                               {"add_eos_token", false},
                               {"clean_up_tokenization_spaces", false},
                               {"model_max_length", 1 << 20}};
  std::string configText;
  llvm::raw_string_ostream configOs(configText);
  configOs << llvm::formatv("{0:2}", json::Value(std::move(tokenizerConfig)))
           << "\n";
  for (auto [file, contents] :
       {std::pair<std::string, std::string>{"tokenizer.json",
                                            ds::tok::byteLevelTokenizerJson()},
        {"tokenizer_config.json", configText}})
    if (absl::Status st =
            ds::writeFileAtomically(opts.outDir + "/" + file, contents);
        !st.ok())
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     std::string(st.message()));
  return llvm::Error::success();
}

} // namespace

llvm::Error ds::hf::writeTinyModel(const TinyModelOptions &options) {
  return TinyWriter(options).write();
}
