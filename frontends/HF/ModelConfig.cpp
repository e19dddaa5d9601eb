//===- ModelConfig.cpp - Hugging Face config.json for MoE LMs -------------===//
//
// Field names, defaults and layer rules follow transformers' configuration
// and modeling files for each family (see shared/MODELS.md). Version-dependent
// behaviour follows the newest transformers and is called out where chosen.
//
//===----------------------------------------------------------------------===//

#include "ds/frontends/HF/ModelConfig.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <cstdio>
#include <set>

using namespace ds;
using namespace ds::hf;
namespace json = llvm::json;

llvm::StringRef ds::hf::archName(Arch arch) {
  switch (arch) {
  case Arch::DeepSeekV3:
    return "deepseek_v3";
  case Arch::DeepSeekV2:
    return "deepseek_v2";
  case Arch::Mixtral:
    return "mixtral";
  case Arch::Qwen2Moe:
    return "qwen2_moe";
  case Arch::Qwen3Moe:
    return "qwen3_moe";
  }
  return "?";
}

static double yarnMscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

double ModelConfig::attentionScale() const {
  if (!isMLA())
    return 1.0 / std::sqrt(static_cast<double>(headDim));
  double scale =
      1.0 / std::sqrt(static_cast<double>(qkNopeHeadDim + qkRopeHeadDim));
  // DeepSeek multiplies the softmax scale by mscale(factor, mscale_all_dim)^2
  // when rope scaling is active (for V2 only since transformers PR #47435).
  if (rope.scaling != RopeScaling::none && rope.mscaleAllDim != 0.0) {
    double m = yarnMscale(rope.factor, rope.mscaleAllDim);
    scale *= m * m;
  }
  return scale;
}

namespace {

/// "4", "0.5", "1e-20": the shortest %g form for messages.
std::string shortNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

/// Deepest nesting of arrays and objects a config may have (real ones stay
/// under 5): llvm::json::parse recurses per level.
constexpr int kMaxJsonDepth = 64;
/// Largest config file read (real ones are a few KiB).
constexpr uint64_t kMaxConfigBytes = 16 << 20;

/// Refuses JSON nested deeper than kMaxJsonDepth before the recursive
/// parser sees it (a 50,000-level file would overflow the stack).
llvm::Error checkDepth(llvm::StringRef text, llvm::StringRef path) {
  int depth = 0;
  bool inString = false, escaped = false;
  for (char ch : text) {
    if (inString) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        inString = false;
      continue;
    }
    if (ch == '"')
      inString = true;
    else if (ch == '[' || ch == '{') {
      if (++depth > kMaxJsonDepth)
        return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                       path + ": nested deeper than " +
                                           llvm::Twine(kMaxJsonDepth) +
                                           " levels; not a model config");
    } else if (ch == ']' || ch == '}')
      --depth;
  }
  return llvm::Error::success();
}

/// The contents of a config file: a regular file (a FIFO or device would
/// block or never end) of at most kMaxConfigBytes.
llvm::Expected<std::string> readConfigFile(llvm::StringRef path) {
  llvm::sys::fs::file_status st;
  if (std::error_code ec = llvm::sys::fs::status(path, st))
    return llvm::createStringError(ec, path + ": cannot read: " + ec.message());
  if (!llvm::sys::fs::is_regular_file(st))
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": not a regular file");
  if (st.getSize() > kMaxConfigBytes)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": " + llvm::Twine(st.getSize()) +
                                       " bytes; a model config is at most " +
                                       llvm::Twine(kMaxConfigBytes) + " bytes");
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer)
    return llvm::createStringError(
        buffer.getError(),
        path + ": cannot read: " + buffer.getError().message());
  return (*buffer)->getBuffer().str();
}

/// Typed access to config fields; every error names the file and the field.
class Fields {
public:
  Fields(const json::Object &object, llvm::StringRef path,
         llvm::StringRef prefix = "")
      : object(object), path(path), prefix(prefix) {}

  llvm::Error error(llvm::StringRef key, const llvm::Twine &message) const {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": field '" + prefix + key +
                                       "': " + message);
  }

  bool has(llvm::StringRef key) const {
    const json::Value *v = object.get(key);
    return v && v->kind() != json::Value::Null;
  }

  /// Sizes beyond this are not real models; bounding them keeps every
  /// derived product and per-layer table small (found by ds-fuzz-config).
  static constexpr int64_t kMaxSize = int64_t(1) << 31;

  llvm::Expected<int64_t> integer(llvm::StringRef key,
                                  std::optional<int64_t> fallback,
                                  int64_t min = 0,
                                  int64_t max = kMaxSize) const {
    if (!has(key)) {
      if (fallback)
        return *fallback;
      return error(key, "is required");
    }
    std::optional<int64_t> v = object.get(key)->getAsInteger();
    if (!v) {
      // 4096.0 is a valid integer in JSON written by Python.
      std::optional<double> d = object.get(key)->getAsNumber();
      if (d && std::floor(*d) == *d && std::fabs(*d) < 9e15)
        v = static_cast<int64_t>(*d);
    }
    if (!v)
      return error(key, "must be an integer");
    if (*v < min)
      return error(key, "must be at least " + llvm::Twine(min) + ", got " +
                            llvm::Twine(*v));
    if (*v > max)
      return error(key, "must be at most " + llvm::Twine(max) + ", got " +
                            llvm::Twine(*v));
    return *v;
  }

  /// A field transformers may save under another name (a config class's
  /// attribute_map: Qwen3-MoE's num_experts as num_local_experts): the
  /// first of `keys` present, the canonical name first. Two present names
  /// that disagree are an error; `fallback` applies only when none is.
  llvm::Expected<int64_t> integerAny(llvm::ArrayRef<llvm::StringRef> keys,
                                     std::optional<int64_t> fallback,
                                     int64_t min = 0,
                                     int64_t max = kMaxSize) const {
    std::optional<int64_t> found;
    llvm::StringRef foundKey;
    for (llvm::StringRef key : keys) {
      if (!has(key))
        continue;
      llvm::Expected<int64_t> v = integer(key, std::nullopt, min, max);
      if (!v)
        return v.takeError();
      if (found && *found != *v)
        return error(key, "is " + llvm::Twine(*v) + " but '" + prefix +
                              foundKey + "' is " + llvm::Twine(*found) +
                              "; they name the same setting");
      if (!found) {
        found = *v;
        foundKey = key;
      }
    }
    if (found)
      return *found;
    if (fallback)
      return *fallback;
    return error(keys.front(), "is required");
  }

  llvm::Expected<double> number(llvm::StringRef key,
                                std::optional<double> fallback) const {
    if (!has(key)) {
      if (fallback)
        return *fallback;
      return error(key, "is required");
    }
    std::optional<double> v = object.get(key)->getAsNumber();
    if (!v || !std::isfinite(*v))
      return error(key, "must be a finite number");
    return *v;
  }

  llvm::Expected<bool> boolean(llvm::StringRef key, bool fallback) const {
    if (!has(key))
      return fallback;
    std::optional<bool> v = object.get(key)->getAsBoolean();
    if (!v)
      return error(key, "must be true or false");
    return *v;
  }

  llvm::Expected<std::string>
  string(llvm::StringRef key, std::optional<std::string> fallback) const {
    if (!has(key)) {
      if (fallback)
        return *fallback;
      return error(key, "is required");
    }
    std::optional<llvm::StringRef> v = object.get(key)->getAsString();
    if (!v)
      return error(key, "must be a string");
    return v->str();
  }

  /// Token ids: one integer, a list of integers, or null / absent (none);
  /// each in [0, vocab).
  llvm::Expected<std::vector<int64_t>> tokenIds(llvm::StringRef key,
                                                int64_t vocab) const {
    std::vector<int64_t> ids;
    if (!has(key))
      return ids;
    const json::Value *v = object.get(key);
    std::vector<const json::Value *> items;
    if (const json::Array *a = v->getAsArray())
      for (const json::Value &e : *a)
        items.push_back(&e);
    else
      items.push_back(v);
    for (const json::Value *e : items) {
      std::optional<int64_t> id = e->getAsInteger();
      if (!id)
        return error(key, "must be a token id or a list of token ids");
      if (*id < 0 || *id >= vocab)
        return error(key, "token id " + llvm::Twine(*id) +
                              " is outside the vocabulary [0, " +
                              llvm::Twine(vocab) + ")");
      ids.push_back(*id);
    }
    return ids;
  }

  const json::Object *objectField(llvm::StringRef key) const {
    return has(key) ? object.get(key)->getAsObject() : nullptr;
  }
  const json::Array *arrayField(llvm::StringRef key) const {
    return has(key) ? object.get(key)->getAsArray() : nullptr;
  }

  const json::Object &object;
  llvm::StringRef path;
  std::string prefix;
};

/// Assigns `expr` (an Expected) to `dst` or returns its error.
#define DS_ASSIGN(dst, expr)                                                   \
  do {                                                                         \
    auto _value = (expr);                                                      \
    if (!_value)                                                               \
      return _value.takeError();                                               \
    dst = *_value;                                                             \
  } while (false)

llvm::Error parseRope(const Fields &f, ModelConfig &c, double defaultTheta) {
  // v5 folds rope_theta and rope_scaling into rope_parameters.
  const json::Object *params = f.objectField("rope_parameters");
  if (f.has("rope_parameters") && !params)
    return f.error("rope_parameters", "must be an object");
  const json::Object *scaling = params ? params : f.objectField("rope_scaling");
  if (!params && f.has("rope_scaling") && !scaling)
    return f.error("rope_scaling", "must be an object or null");
  if (params) {
    Fields p(*params, f.path, "rope_parameters.");
    DS_ASSIGN(c.rope.theta, p.number("rope_theta", f.has("rope_theta")
                                                       ? std::nullopt
                                                       : std::optional<double>(
                                                             defaultTheta)));
    if (f.has("rope_theta") && !p.has("rope_theta"))
      DS_ASSIGN(c.rope.theta, f.number("rope_theta", defaultTheta));
  } else {
    DS_ASSIGN(c.rope.theta, f.number("rope_theta", defaultTheta));
  }
  if (c.rope.theta <= 1.0)
    return f.error("rope_theta", "must be greater than 1");
  if (!scaling)
    return llvm::Error::success();
  Fields s(*scaling, f.path, params ? "rope_parameters." : "rope_scaling.");
  std::string type;
  if (s.has("rope_type"))
    DS_ASSIGN(type, s.string("rope_type", std::nullopt));
  else
    DS_ASSIGN(type, s.string("type", std::string("default")));
  if (type == "default")
    return llvm::Error::success();
  if (type == "linear") {
    c.rope.scaling = RopeScaling::linear;
    DS_ASSIGN(c.rope.factor, s.number("factor", std::nullopt));
  } else if (type == "yarn") {
    c.rope.scaling = RopeScaling::yarn;
    DS_ASSIGN(c.rope.factor, s.number("factor", std::nullopt));
    DS_ASSIGN(c.rope.originalMaxPosition,
              s.integer("original_max_position_embeddings",
                        c.maxPositionEmbeddings, 1));
    DS_ASSIGN(c.rope.betaFast, s.number("beta_fast", 32.0));
    DS_ASSIGN(c.rope.betaSlow, s.number("beta_slow", 1.0));
    DS_ASSIGN(c.rope.mscale, s.number("mscale", 0.0));
    DS_ASSIGN(c.rope.mscaleAllDim, s.number("mscale_all_dim", 0.0));
    DS_ASSIGN(c.rope.attentionFactor, s.number("attention_factor", 0.0));
    DS_ASSIGN(c.rope.truncate, s.boolean("truncate", true));
    // transformers 4.5x replaced `factor` by max_position_embeddings / L0;
    // the newest uses `factor` as given. ds follows the newest; a config on
    // which the two disagree is ambiguous and is rejected.
    double implied = static_cast<double>(c.maxPositionEmbeddings) /
                     static_cast<double>(c.rope.originalMaxPosition);
    if (std::fabs(implied - c.rope.factor) > 1e-9 * c.rope.factor)
      return s.error("factor",
                     "is " + shortNumber(c.rope.factor) +
                         " but max_position_embeddings / "
                         "original_max_position_embeddings is " +
                         shortNumber(implied) +
                         "; transformers versions disagree on which applies, "
                         "so make them equal");
  } else {
    return s.error(s.has("rope_type") ? "rope_type" : "type",
                   "rope scaling '" + type +
                       "' is not supported (default, linear and yarn are)");
  }
  if (c.rope.factor <= 0.0)
    return s.error("factor", "must be positive");
  return llvm::Error::success();
}

llvm::Expected<Activation> parseActivation(const Fields &f) {
  std::string act;
  DS_ASSIGN(act, f.string("hidden_act", std::string("silu")));
  std::optional<Activation> a =
      llvm::StringSwitch<std::optional<Activation>>(act)
          .Cases({"silu", "swish"}, Activation::silu)
          .Case("gelu", Activation::gelu)
          .Cases({"gelu_pytorch_tanh", "gelu_new"}, Activation::gelu_tanh)
          .Case("relu", Activation::relu)
          .Default(std::nullopt);
  if (!a)
    return f.error("hidden_act", "activation '" + act + "' is not supported");
  return *a;
}

/// Rejects a field unless it is absent or equals one of `allowed`.
llvm::Error requireString(const Fields &f, llvm::StringRef key,
                          std::initializer_list<llvm::StringRef> allowed,
                          llvm::StringRef why) {
  if (!f.has(key))
    return llvm::Error::success();
  std::string v;
  DS_ASSIGN(v, f.string(key, std::nullopt));
  for (llvm::StringRef a : allowed)
    if (v == a)
      return llvm::Error::success();
  return f.error(key, "'" + v + "' is not supported: " + why);
}

} // namespace

llvm::Expected<ModelConfig> ds::hf::parseModelConfig(llvm::StringRef text,
                                                     llvm::StringRef path) {
  if (llvm::Error e = checkDepth(text, path))
    return std::move(e);
  llvm::Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        path + ": not valid JSON: " + llvm::toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": not a JSON object");
  Fields f(*root, path);
  ModelConfig c;
  c.path = path.str();

  std::string modelType;
  DS_ASSIGN(modelType, f.string("model_type", std::nullopt));
  std::optional<Arch> arch = llvm::StringSwitch<std::optional<Arch>>(modelType)
                                 .Case("deepseek_v3", Arch::DeepSeekV3)
                                 .Case("deepseek_v2", Arch::DeepSeekV2)
                                 .Case("mixtral", Arch::Mixtral)
                                 .Case("qwen2_moe", Arch::Qwen2Moe)
                                 .Case("qwen3_moe", Arch::Qwen3Moe)
                                 .Default(std::nullopt);
  if (!arch)
    return f.error("model_type",
                   "unknown architecture '" + modelType +
                       "'; ds imports deepseek_v3, deepseek_v2, mixtral, "
                       "qwen2_moe and qwen3_moe");
  c.arch = *arch;
  if (const json::Array *archs = f.arrayField("architectures"))
    for (const json::Value &a : *archs) {
      std::optional<llvm::StringRef> name = a.getAsString();
      if (!name || !name->ends_with("ForCausalLM"))
        return f.error("architectures",
                       "only *ForCausalLM models are imported");
    }
  if (f.has("quantization_config")) {
    const json::Object *q = f.objectField("quantization_config");
    std::string method = "?";
    if (q)
      if (std::optional<llvm::StringRef> m = q->getString("quant_method"))
        method = m->str();
    if (method != "fp8")
      return f.error("quantization_config",
                     "quant_method '" + method +
                         "' is not imported; ds reads DeepSeek-V3's FP8 "
                         "checkpoints (quant_method 'fp8')");
    if (std::optional<llvm::StringRef> fmt = q->getString("fmt"))
      if (*fmt != "e4m3")
        return f.error("quantization_config",
                       "fmt '" + fmt->str() + "' is not e4m3");
    if (std::optional<llvm::StringRef> act = q->getString("activation_scheme"))
      if (*act != "dynamic")
        return f.error("quantization_config",
                       "activation_scheme '" + act->str() +
                           "' is not imported (dynamic only)");
    const json::Array *block = q->getArray("weight_block_size");
    std::optional<int64_t> bn, bk;
    if (block && block->size() == 2) {
      bn = (*block)[0].getAsInteger();
      bk = (*block)[1].getAsInteger();
    }
    if (!bn || !bk || *bn <= 0 || *bk <= 0 || *bn > (1 << 20) ||
        *bk > (1 << 20))
      return f.error("quantization_config",
                     "weight_block_size must be two positive integers");
    c.fp8WeightBlock = std::make_pair(*bn, *bk);
  }

  // Per-family defaults of the transformers configuration classes, for the
  // fields their configs may leave out.
  struct Defaults {
    std::optional<int64_t> kvHeads;
    double eps, theta;
    int64_t maxPos;
  };
  Defaults d;
  switch (c.arch) {
  case Arch::DeepSeekV3:
    d = {std::nullopt, 1e-6, 10000.0, 4096};
    break;
  case Arch::DeepSeekV2:
    d = {std::nullopt, 1e-6, 10000.0, 2048};
    break;
  case Arch::Mixtral:
    d = {8, 1e-5, 1e6, 131072};
    break;
  case Arch::Qwen2Moe:
    d = {16, 1e-6, 10000.0, 32768};
    break;
  case Arch::Qwen3Moe:
    d = {4, 1e-6, 10000.0, 32768};
    break;
  }
  // The sizes every config.json transformers writes has: a missing (or
  // null) one is an error, not a family default that fails later on a
  // tensor shape.
  DS_ASSIGN(c.vocabSize, f.integer("vocab_size", std::nullopt, 1));
  DS_ASSIGN(c.eosTokenIds, f.tokenIds("eos_token_id", c.vocabSize));
  DS_ASSIGN(c.hiddenSize, f.integer("hidden_size", std::nullopt, 1));
  DS_ASSIGN(c.intermediateSize,
            f.integer("intermediate_size", std::nullopt, 1));
  DS_ASSIGN(c.numLayers, f.integer("num_hidden_layers", std::nullopt, 1,
                                   /*max=*/int64_t(1) << 16));
  DS_ASSIGN(c.numHeads, f.integer("num_attention_heads", std::nullopt, 1));
  DS_ASSIGN(c.numKvHeads, f.integer("num_key_value_heads",
                                    d.kvHeads ? *d.kvHeads : c.numHeads, 1));
  DS_ASSIGN(c.rmsNormEps, f.number("rms_norm_eps", d.eps));
  if (c.rmsNormEps <= 0)
    return f.error("rms_norm_eps", "must be positive");
  DS_ASSIGN(c.maxPositionEmbeddings,
            f.integer("max_position_embeddings", d.maxPos, 1));
  DS_ASSIGN(c.tieWordEmbeddings, f.boolean("tie_word_embeddings", false));
  DS_ASSIGN(c.hiddenAct, parseActivation(f));
  if (llvm::Error e = parseRope(f, c, d.theta))
    return std::move(e);

  if (c.isMLA()) {
    bool v3 = c.arch == Arch::DeepSeekV3;
    if (c.numKvHeads != c.numHeads)
      return f.error("num_key_value_heads",
                     "must equal num_attention_heads for multi-head latent "
                     "attention");
    if (f.has("q_lora_rank"))
      DS_ASSIGN(c.qLoraRank, f.integer("q_lora_rank", std::nullopt, 1));
    else if (!root->get("q_lora_rank"))
      c.qLoraRank = v3 ? 1536 : 1536;
    DS_ASSIGN(c.kvLoraRank, f.integer("kv_lora_rank", 512, 1));
    DS_ASSIGN(c.qkNopeHeadDim, f.integer("qk_nope_head_dim", 128, 1));
    DS_ASSIGN(c.qkRopeHeadDim, f.integer("qk_rope_head_dim", 64, 2));
    DS_ASSIGN(c.vHeadDim, f.integer("v_head_dim", 128, 1));
    if (c.qkRopeHeadDim % 2)
      return f.error("qk_rope_head_dim", "must be even");
    c.headDim = c.qkRopeHeadDim;
    DS_ASSIGN(c.attentionBias, f.boolean("attention_bias", false));
    int64_t routed, shared, firstDense, freq;
    DS_ASSIGN(routed, f.integerAny({"n_routed_experts", "num_local_experts",
                                    "num_experts"},
                                   v3 ? 256 : 64, 1));
    DS_ASSIGN(shared, f.integer("n_shared_experts", v3 ? 1 : 2, 0));
    DS_ASSIGN(c.topK,
              f.integer("num_experts_per_tok",
                        v3 ? std::optional<int64_t>(8) : std::nullopt, 1));
    DS_ASSIGN(c.moeIntermediateSize,
              f.integer("moe_intermediate_size", v3 ? 2048 : 1407, 1));
    DS_ASSIGN(firstDense, f.integer("first_k_dense_replace", v3 ? 3 : 0, 0));
    DS_ASSIGN(freq, f.integer("moe_layer_freq", 1, 1));
    DS_ASSIGN(c.routedScalingFactor,
              f.number("routed_scaling_factor", v3 ? 2.5 : 1.0));
    c.numExperts = routed;
    c.sharedIntermediateSize = shared * c.moeIntermediateSize;
    bool mlpBias;
    DS_ASSIGN(mlpBias, f.boolean("mlp_bias", false));
    if (mlpBias)
      return f.error("mlp_bias", "MLP biases are not supported yet");
    if (v3) {
      if (shared < 1)
        return f.error("n_shared_experts", "DeepSeek-V3 needs at least one");
      if (freq != 1)
        return f.error("moe_layer_freq",
                       "must be 1: transformers' DeepSeek-V3 ignores it, "
                       "DeepSeek's reference does not");
      if (auto e = requireString(f, "scoring_func", {"sigmoid"},
                                 "DeepSeek-V3 routes with sigmoid scores"))
        return std::move(e);
      if (auto e = requireString(f, "topk_method", {"noaux_tc"},
                                 "DeepSeek-V3 routes with noaux_tc"))
        return std::move(e);
      bool rotateInterleaved;
      DS_ASSIGN(rotateInterleaved, f.boolean("rope_interleave", true));
      c.ropeStyle =
          rotateInterleaved ? RopeStyle::deinterleave : RopeStyle::rotate_half;
      c.scoring = ScoringFunc::sigmoid;
      c.scoreCorrectionBias = true;
      c.groupScore = GroupScore::top2_sum;
      DS_ASSIGN(c.nGroup, f.integer("n_group", 8, 1));
      DS_ASSIGN(c.topkGroup, f.integer("topk_group", 4, 1));
      DS_ASSIGN(c.normTopkProb, f.boolean("norm_topk_prob", true));
      c.normEpsilon = c.normTopkProb ? 1e-20 : 0.0;
    } else {
      if (auto e = requireString(f, "scoring_func", {"softmax"},
                                 "DeepSeek-V2 routes with softmax scores"))
        return std::move(e);
      std::string method;
      DS_ASSIGN(method, f.string("topk_method", std::string("greedy")));
      if (method == "group_limited_greedy") {
        DS_ASSIGN(c.nGroup, f.integer("n_group", std::nullopt, 1));
        DS_ASSIGN(c.topkGroup, f.integer("topk_group", std::nullopt, 1));
      } else if (method != "greedy") {
        return f.error("topk_method", "'" + method +
                                          "' is not supported "
                                          "(greedy, group_limited_greedy are)");
      }
      bool norm;
      DS_ASSIGN(norm, f.boolean("norm_topk_prob", false));
      if (norm)
        return f.error("norm_topk_prob",
                       "transformers' DeepSeek-V2 never renormalizes; true "
                       "is ambiguous and rejected");
      c.ropeStyle = RopeStyle::interleaved;
    }
    for (int64_t i = 0; i < c.numLayers; ++i)
      c.moeLayers.push_back(i >= firstDense && (v3 || i % freq == 0));
  } else {
    DS_ASSIGN(c.headDim, f.integer("head_dim", c.hiddenSize / c.numHeads, 2));
    if (!f.has("head_dim") && c.hiddenSize % c.numHeads)
      return f.error("hidden_size", "is not divisible by num_attention_heads");
    if (c.numHeads % c.numKvHeads)
      return f.error("num_key_value_heads", "must divide num_attention_heads");
    if (c.arch == Arch::Mixtral) {
      DS_ASSIGN(c.numExperts, f.integerAny({"num_local_experts", "num_experts",
                                            "n_routed_experts"},
                                           8, 1));
      DS_ASSIGN(c.topK, f.integer("num_experts_per_tok", 2, 1));
      c.moeIntermediateSize = c.intermediateSize;
      c.normTopkProb = true;
      if (f.has("sliding_window")) {
        int64_t w;
        DS_ASSIGN(w, f.integer("sliding_window", std::nullopt, 1));
        c.slidingWindow = w;
      }
      c.moeLayers.assign(c.numLayers, true);
    } else {
      bool qwen3 = c.arch == Arch::Qwen3Moe;
      DS_ASSIGN(c.numExperts, f.integerAny({"num_experts", "num_local_experts",
                                            "n_routed_experts"},
                                           qwen3 ? 128 : 60, 0));
      DS_ASSIGN(c.topK, f.integer("num_experts_per_tok", qwen3 ? 8 : 4, 1));
      DS_ASSIGN(c.moeIntermediateSize,
                f.integer("moe_intermediate_size", qwen3 ? 768 : 1408, 1));
      DS_ASSIGN(c.normTopkProb, f.boolean("norm_topk_prob", false));
      bool sliding;
      DS_ASSIGN(sliding, f.boolean("use_sliding_window", false));
      if (sliding)
        return f.error("use_sliding_window",
                       "sliding-window Qwen-MoE layers are not supported "
                       "(transformers versions disagree on which layers "
                       "slide)");
      int64_t step;
      DS_ASSIGN(step, f.integer("decoder_sparse_step", 1, 1));
      std::set<int64_t> mlpOnly;
      if (const json::Array *layers = f.arrayField("mlp_only_layers")) {
        for (const json::Value &v : *layers) {
          std::optional<int64_t> i = v.getAsInteger();
          if (!i)
            return f.error("mlp_only_layers", "must hold integers");
          mlpOnly.insert(*i);
        }
      }
      for (int64_t i = 0; i < c.numLayers; ++i)
        c.moeLayers.push_back(!mlpOnly.count(i) && c.numExperts > 0 &&
                              (i + 1) % step == 0);
      if (qwen3) {
        c.qkNorm = true;
        DS_ASSIGN(c.attentionBias, f.boolean("attention_bias", false));
      } else {
        DS_ASSIGN(c.qkvBias, f.boolean("qkv_bias", true));
        DS_ASSIGN(c.sharedIntermediateSize,
                  f.integer("shared_expert_intermediate_size", 5632, 0));
        c.sharedExpertGate = c.sharedIntermediateSize > 0;
      }
    }
  }
  if (c.numExperts > 0) {
    if (c.topK > c.numExperts)
      return f.error("num_experts_per_tok", "exceeds the number of experts");
    if (c.nGroup < 1 || c.numExperts % c.nGroup)
      return f.error("n_group", "must divide the number of routed experts");
    if (c.topkGroup > c.nGroup)
      return f.error("topk_group", "exceeds n_group");
    if (c.topK > c.topkGroup * (c.numExperts / c.nGroup))
      return f.error("num_experts_per_tok",
                     "exceeds the experts in the topk_group kept groups");
  }
  if (c.headDim % 2)
    return f.error("head_dim", "the rotary dimension must be even");
  return c;
}

llvm::Error ds::hf::applyGenerationConfig(llvm::StringRef text,
                                          llvm::StringRef path,
                                          ModelConfig &config) {
  if (llvm::Error e = checkDepth(text, path))
    return e;
  llvm::Expected<json::Value> parsed = json::parse(text);
  if (!parsed)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": " +
                                       llvm::toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   path + ": not a JSON object");
  Fields f(*root, path);
  if (f.has("eos_token_id"))
    DS_ASSIGN(config.eosTokenIds, f.tokenIds("eos_token_id", config.vocabSize));
  return llvm::Error::success();
}

llvm::Expected<ModelConfig> ds::hf::loadModelConfig(llvm::StringRef dir) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, "config.json");
  llvm::Expected<std::string> text = readConfigFile(path);
  if (!text)
    return text.takeError();
  llvm::Expected<ModelConfig> config = parseModelConfig(*text, path);
  if (!config)
    return config;
  // generation_config.json, when present, says when generation stops.
  llvm::SmallString<256> gen(dir);
  llvm::sys::path::append(gen, "generation_config.json");
  if (!llvm::sys::fs::exists(gen))
    return config;
  llvm::Expected<std::string> genText = readConfigFile(gen);
  if (!genText)
    return genText.takeError();
  if (llvm::Error e = applyGenerationConfig(*genText, gen, *config))
    return std::move(e);
  return config;
}
