//===- Plan.h - execution plans and the artifact format ----------*- C++
//-*-===//
//
// What the compiler hands the runtime: for every model function, its values
// (with shapes as products of compile-time constants and dims of other
// values, evaluated at run time), the steps that compute them (a runtime
// kernel or a generated kernel), the weights in their packed layouts, and the
// KV caches the functions read and update in place.
//
// An artifact file is: the magic "DSARTIF1", the header length and its
// FNV-1a checksum, the header (JSON: plans, weight table, target, versions),
// then 64-byte aligned sections: the generated code (an ELF shared object)
// and the weights. Readers check sizes, offsets, checksums and versions and
// reject truncated, corrupted and foreign files with a message saying which.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_PLAN_H
#define DS_RT_PLAN_H

#include "absl/status/statusor.h"

#include <cstdint>
#include <string>
#include <vector>

namespace ds::rt {

/// Element types of plan values.
enum class ElemType : uint8_t { F32 = 0, I64 = 1, I32 = 2 };
size_t elemSize(ElemType t);

/// A dim: `constant` times the product of dims `factors` (value, axis) of
/// values defined earlier (or function inputs).
struct DimExpr {
  int64_t constant = 1;
  std::vector<std::pair<int32_t, int32_t>> factors;
  static DimExpr of(int64_t c) { return DimExpr{c, {}}; }
  static DimExpr ref(int32_t value, int32_t axis) {
    return DimExpr{1, {{value, axis}}};
  }
};

/// What a step does. Operands and results are value ids; `ints` and
/// `floats` carry the op's configuration (layout documented per case in
/// Executor.cpp, written by codegen/CPU/PlanBuilder.cpp).
enum class OpCode : uint32_t {
  Embedding = 0,
  RMSNorm,
  Linear, ///< (input, [norm weight]) -> y; GEMM with fused epilogues
  Copy,   ///< split pieces: strided copy along an axis
  Rope,
  CacheUpdate, ///< writes the cache in place; the result aliases it
  Attention,
  MLAAttention,
  Router,      ///< fused_router: logits GEMM + routing
  MoE,         ///< fused_moe routed experts
  Elementwise, ///< a generated kernel
  FakeQuant,   ///< activation quantize-dequantize (#ds.act_quant)
  Alias,       ///< reshapes: the result shares the operand's buffer
  /// A generated kernel other than elementwise (ints[0] says which: 0 =
  /// RMSNorm); descriptors for operands, then weights, then results.
  Generated,
};

struct Step {
  OpCode op = OpCode::Alias;
  std::vector<int32_t> operands, results;
  std::vector<int32_t> weights; ///< weight table indices the step reads
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::string kernel;   ///< generated kernel symbol (Elementwise, Generated)
  std::string location; ///< source op and location, for error messages
};

struct ValueInfo {
  enum class Kind : uint8_t { Temp = 0, Input = 1, Cache = 2, Alias = 3 };
  Kind kind = Kind::Temp;
  ElemType type = ElemType::F32;
  std::vector<DimExpr> shape;
  /// Input: the function argument; Cache: the model cache; Alias: the value
  /// whose buffer this one shares.
  int32_t index = -1;
};

struct FunctionPlan {
  std::string name;
  std::vector<ValueInfo> values;
  /// Non-cache arguments, in order (value ids).
  std::vector<int32_t> inputs;
  /// Results in order; a cache result is the cache value, and the caller
  /// gets it through the KV cache, not as an output.
  std::vector<int32_t> outputs;
  std::vector<Step> steps;
};

/// A KV cache: per slot, `rowShape` ([maxLen, ...]) f32.
struct CacheInfo {
  std::string name;
  std::vector<int64_t> rowShape;
};

enum class WeightLayout : uint32_t {
  Raw = 0,         ///< row-major as `shape`, of `type`
  PackedF32 = 1,   ///< kernels::WeightFormat::F32, per expert if experts > 0
  PackedI8 = 2,    ///< kernels::WeightFormat::I8, per expert if experts > 0
  PackedI4 = 3,    ///< kernels::WeightFormat::I4 (K groups of `group`)
  PackedF8 = 4,    ///< kernels::WeightFormat::F8 (K groups of `group`)
  PackedI8Dot = 5, ///< kernels::WeightFormat::I8Dot (W8A8)
  PackedS24 = 6,   ///< kernels::WeightFormat::S24 (2:4 sparse)
  PackedBF16 = 7,  ///< kernels::WeightFormat::BF16
  PackedF16 = 8,   ///< kernels::WeightFormat::F16
};

/// "f32", "packed-int8", ... (for listings).
const char *weightLayoutName(WeightLayout layout);

struct WeightInfo {
  std::string name;
  WeightLayout layout = WeightLayout::Raw;
  ElemType type = ElemType::F32;
  std::vector<int64_t> shape; ///< logical shape ([E,] N, K for GEMM weights)
  uint64_t offset = 0, bytes = 0; ///< in the weights section
  int64_t group = 0;              ///< K group of PackedI4 / PackedF8
};

struct ModelPlan {
  std::vector<FunctionPlan> functions;
  std::vector<CacheInfo> caches;
  std::vector<WeightInfo> weights;
  /// Model facts for tools (vocab size, max cache length, architecture).
  std::string arch;
  int64_t vocabSize = 0, maxCacheLen = 0;
  /// Tokens that end a generation unless the caller ignores EOS
  /// (generation_config.json's eos_token_id, else config.json's).
  std::vector<int64_t> eosTokenIds;
  const FunctionPlan *find(const std::string &name) const;
};

/// Target description recorded by the compiler and checked by the loader.
struct TargetInfo {
  std::string triple, cpu, features;
};

/// Serializes to / parses from the header JSON. Parsing validates every id
/// against the tables (no out-of-range index can reach a kernel).
std::string planToJson(const ModelPlan &plan, const TargetInfo &target,
                       const std::string &extraJson = "{}");
absl::StatusOr<ModelPlan> planFromJson(const std::string &json,
                                       TargetInfo *target = nullptr);

/// FNV-1a, 64-bit.
uint64_t fnv1a(const void *data, size_t size,
               uint64_t seed = 0xcbf29ce484222325ULL);

/// Writes an artifact: plan + code (shared object bytes) + weights section.
absl::Status writeArtifact(const std::string &path, const ModelPlan &plan,
                           const TargetInfo &target, const std::string &code,
                           const std::string &weights);

} // namespace ds::rt

#endif // DS_RT_PLAN_H
