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
#include <variant>
#include <vector>

namespace ds::rt {

/// Element types of plan values. BF16 / F16 are the storage of narrow KV
/// caches only (cache values, their aliases; read by the cache steps).
enum class ElemType : uint8_t {
  F32 = 0,
  I64 = 1,
  I32 = 2,
  BF16 = 3,
  F16 = 4,
  F8E4M3 = 5, ///< OCP e4m3fn: KV caches only, with their cache's scale
};
size_t elemSize(ElemType t);
/// "f32", "i64", "i32", "bf16", "f16", "f8e4m3".
const char *elemTypeName(ElemType t);
/// Whether `scale` fits a cache of type t: a positive, finite power of two
/// for F8E4M3 (so that scaling is exact), 1 for every other type.
bool validCacheScale(ElemType t, double scale);

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

/// The artifact format this runtime reads and the compiler writes. Bump it
/// on any change to the header's meaning (step fields, weight layouts):
/// an artifact of another version is refused, naming both versions.
inline constexpr int64_t kArtifactFormatVersion = 10;
/// The most axes a plan's process grid may have (ds-partition makes 4).
inline constexpr size_t kMaxGridAxes = 8;

/// What a step does: the index of its configuration in StepConfig.
enum class OpCode : uint32_t {
  Embedding = 0,
  RMSNorm,
  Linear, ///< (input, [residual]) -> y; GEMM with fused prologue/epilogues
  Copy,   ///< split pieces: strided copy along an axis
  Rope,
  CacheUpdate, ///< writes the cache in place; the result aliases it
  Attention,
  MLAAttention,
  Router,      ///< fused_router: logits GEMM + routing
  MoE,         ///< fused_moe routed experts
  Elementwise, ///< a generated kernel
  Alias,       ///< reshapes: the result shares the operand's buffer
  /// A generated kernel other than elementwise; descriptors for operands,
  /// then weights, then results.
  Generated,
  AllReduce, ///< sum over the plan's processes (Device::communicator)
  AllGather, ///< every process's block, concatenated along an axis
  Send,      ///< to the next pipeline stage
  Recv,      ///< from the previous pipeline stage
};

/// Each step kind's configuration, by name. One struct per OpCode, in the
/// same order (StepConfig's index is the OpCode); encoded and decoded in
/// Plan.cpp only. Operands, results and weights are listed per kind.
namespace steps {

/// Activation quantize-dequantize before a GEMM (#ds.act_quant).
struct ActQuant {
  int32_t storage = -1; ///< ds::QStorage, -1: none
  int64_t group = 0;    ///< 0: per token, else K group size
  double scale = 0;     ///< calibrated static scale (0: dynamic); W8A8's
                        ///< static input scale
  bool enabled() const { return storage >= 0; }
};

/// ids -> rows of the table. Operands (ids); weights (table [V, H] f32).
/// With `vocab` > 0 the table holds rows [firstRow, firstRow + V_l) of a
/// vocabulary of `vocab` (a vocabulary-split embedding): other ids give
/// zeros.
struct Embedding {
  int64_t firstRow = 0, vocab = 0;
};
/// y = rms_norm(x) * w. Operands (x); weights (w [H] f32).
struct RMSNorm {
  double epsilon = 0;
};
/// y = [residual +] act(norm(x) W^T [+ bias]) (GLU halves when gated).
/// Operands (x[, residual]); weights (W packed[, bias [N]][, norm w [K]]).
struct Linear {
  bool norm = false, bias = false, gated = false, residual = false;
  int32_t activation = -1; ///< kernels::Act, -1: none
  double normEpsilon = 0;
  ActQuant inputQuant;
  int32_t inputRound = 0, outputRound = 0; ///< kernels::Round
};
/// Pieces of x along `axis`. Operands (x); results: one per size.
struct Copy {
  int64_t axis = 0;
  std::vector<int64_t> sizes;
};
/// Rotary embedding of the first `rotaryDim` channels. Operands (x,
/// positions).
struct Rope {
  int64_t rotaryDim = 0;
  int32_t style = 0; ///< #ds.rope style: 0 rotate_half, 1 interleaved, 2 V3
  double attentionScaling = 1;
  std::vector<double> invFreq; ///< rotaryDim / 2 frequencies
};
/// cache[slot, pos] = update. Operands (cache, positions, update); the
/// result aliases the cache.
struct CacheUpdate {};
/// Causal attention by absolute position. Operands (q, k, v, positions);
/// k / v are cache values (slot-indexed) when `cached`.
struct Attention {
  int64_t slidingWindow = 0; ///< 0: none
  bool cached = false;
  double scale = 0;
};
/// Absorbed MLA. Operands (q_nope, q_pe, c_kv, k_pe, positions); weights
/// (W_uk^T per head packed, W_uv per head packed[, int8 W_uk^T factors]).
struct MLAAttention {
  bool cached = false;
  double scale = 0;
};
/// Router logits GEMM + #ds.routing. Operands (x); results (weights,
/// indices i32); weights (gate packed[, score bias [E] f32]).
struct Router {
  int64_t numExperts = 0, topK = 0, nGroup = 1, topkGroup = 1;
  bool sigmoid = false, groupScoreMax = false, normTopkProb = false;
  bool bias = false;
  std::vector<int64_t> kept; ///< kept experts (empty: all)
  /// The expert each weight slot holds (placement; empty: slot = expert);
  /// the indices then number the slots.
  std::vector<int64_t> slots;
  double normEpsilon = 0, scalingFactor = 1;
};
/// Routed experts (fused_moe). Operands (x, routing weights, indices);
/// weights (gate_up [E, 2I, H] packed, down [E, H, I] packed). With
/// `routedExperts` > 0 the weights hold a block of experts (expert
/// parallelism): experts [firstExpert, firstExpert + E) of the indices'
/// [0, routedExperts); slots routed to others add nothing here.
/// With `allToAll` (attention data-parallel, experts expert-parallel) the
/// input holds this process's own tokens: each slot's row travels to the
/// process of the group along `gridAxes` whose block holds its expert, the
/// outputs come back, and the result is the whole MoE output of the local
/// tokens, added in ascending expert order.
struct MoE {
  int64_t intermediate = 0;
  int32_t activation = 0; ///< kernels::Act
  ActQuant inputQuant, hiddenQuant;
  int32_t inputRound = 0, outputRound = 0; ///< kernels::Round
  int64_t firstExpert = 0, routedExperts = 0;
  bool allToAll = false;
  std::vector<int64_t> gridAxes;
};
/// A generated elementwise kernel (Step::kernel). Operands broadcast
/// right-aligned to the result; `broadcast` has one flag per input axis.
struct Elementwise {
  std::vector<uint8_t> broadcast;
};
/// A reshape: the result shares the operand's buffer.
struct Alias {};
/// A generated kernel other than elementwise (Step::kernel).
struct Generated {
  enum Kind : int32_t { RMSNorm = 0 };
  int32_t kind = RMSNorm;
  double epsilon = 0; ///< RMSNorm's, baked into the kernel; for listings
};
/// result = the sum of x over the processes of a partitioned plan that
/// differ from this one only along `gridAxes` of the plan's grid (empty:
/// every process), the same on each (f32). Operands (x); results (y, x's
/// shape).
struct AllReduce {
  std::vector<int64_t> gridAxes;
};
/// result = x of each of those processes, concatenated along `axis` in the
/// order of their index along `gridAxes` (row-major in grid order).
/// Operands (x); results (y: x's shape with axis times their number).
struct AllGather {
  int64_t axis = 0;
  std::vector<int64_t> gridAxes;
};
/// Hands x to process `peer` of this process's group along `gridAxes`
/// (its index along them, row-major), which receives it with a Recv step.
/// Operands (x); no results (the IR's result is x itself).
struct Send {
  std::vector<int64_t> gridAxes;
  int64_t peer = 0;
};
/// y = what process `peer` of the group along `gridAxes` sends, of y's
/// planned shape. Operands (none); results (y).
struct Recv {
  std::vector<int64_t> gridAxes;
  int64_t peer = 0;
};

} // namespace steps

using StepConfig =
    std::variant<steps::Embedding, steps::RMSNorm, steps::Linear, steps::Copy,
                 steps::Rope, steps::CacheUpdate, steps::Attention,
                 steps::MLAAttention, steps::Router, steps::MoE,
                 steps::Elementwise, steps::Alias, steps::Generated,
                 steps::AllReduce, steps::AllGather, steps::Send, steps::Recv>;

/// The name of a step kind ("linear", "moe", ...), as the artifact spells
/// it.
const char *opName(OpCode op);

struct Step {
  StepConfig config;
  std::vector<int32_t> operands, results;
  std::vector<int32_t> weights; ///< weight table indices the step reads
  std::string kernel;   ///< generated kernel symbol (Elementwise, Generated)
  std::string location; ///< source op and location, for error messages

  OpCode op() const { return static_cast<OpCode>(config.index()); }
  template <typename T> const T &as() const { return std::get<T>(config); }
  template <typename T> T &as() { return std::get<T>(config); }
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
  /// F32, or BF16 / F16 / F8E4M3 (a narrow cache: values rounded when
  /// written).
  ElemType type = ElemType::F32;
  /// F8E4M3: the power of two its elements are multiplied by (a value x is
  /// stored as e4m3(x / scale)); 1 for the other types.
  double scale = 1.0;
};

enum class WeightLayout : uint32_t {
  Raw = 0,          ///< row-major as `shape`, of `type`
  PackedF32 = 1,    ///< kernels::WeightFormat::F32, per expert if experts > 0
  PackedI8 = 2,     ///< kernels::WeightFormat::I8, per expert if experts > 0
  PackedI4 = 3,     ///< kernels::WeightFormat::I4 (K groups of `group`)
  PackedF8 = 4,     ///< kernels::WeightFormat::F8 (K groups of `group`)
  PackedI8Dot = 5,  ///< kernels::WeightFormat::I8Dot (W8A8)
  PackedS24 = 6,    ///< kernels::WeightFormat::S24 (2:4 sparse)
  PackedBF16 = 7,   ///< kernels::WeightFormat::BF16
  PackedF16 = 8,    ///< kernels::WeightFormat::F16
  PackedI4H = 9,    ///< kernels::WeightFormat::I4H (int4, f16 scales)
  PackedI4Dot = 10, ///< kernels::WeightFormat::I4Dot (W4A8)
};

/// "f32", "packed-int8", ... (for listings).
const char *weightLayoutName(WeightLayout layout);

struct WeightInfo {
  std::string name;
  WeightLayout layout = WeightLayout::Raw;
  ElemType type = ElemType::F32;
  std::vector<int64_t> shape; ///< logical shape ([E,] N, K for GEMM weights)
  uint64_t offset = 0, bytes = 0; ///< in the weights section
  int64_t group = 0; ///< K group of PackedI4 / PackedI4H / PackedI4Dot /
                     ///< PackedF8
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
  /// What the artifact was built from, as a compile cache keys it ("" when
  /// not built through a cache): checked when a cache entry is reused.
  std::string buildKey;
  /// A partitioned model's plan is one process's: `process` of `processes`
  /// (its weights are that process's shards). Its collective steps run
  /// through the device's communicator, which must have as many ranks and
  /// be at rank `process`. 1 and 0 for a whole model.
  int64_t processes = 1, process = 0;
  /// The processes' grid (row-major; its product is `processes`; at most
  /// kMaxGridAxes axes): what the collective steps' gridAxes index. Empty:
  /// one axis of all of them.
  std::vector<int64_t> grid;
  /// Data parallelism: the grid axes the batch is split over (ascending;
  /// empty: none). The processes that differ along them are replicas: each
  /// runs its replica's contiguous block of the sequences (gridGroupOf's
  /// index numbers the blocks), with its own KV caches.
  std::vector<int64_t> batchAxes;
  /// Pipeline parallelism: the grid axis the stages lie along (-1: none).
  /// This process runs the stage of its index along it; its functions
  /// receive activations from the previous stage and send theirs to the
  /// next (Send / Recv steps), and only the last stage's compute the
  /// logits, which the runtime hands to every stage (Executor::run).
  int64_t pipelineAxis = -1;
  const FunctionPlan *find(const std::string &name) const;
};

/// Target description recorded by the compiler and checked by the loader.
/// `features` is LLVM's feature string for the generated code;
/// `requiredIsa` every instruction-set extension the artifact's code and its
/// chosen kernels need ("avx2", "fma", "avx512f", "avx512vnni", ...): the
/// loader refuses a CPU that lacks any, naming them.
struct TargetInfo {
  std::string triple, cpu, features;
  std::vector<std::string> requiredIsa;
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

/// Writes an artifact: plan + code (shared object bytes) + weights section,
/// through a temporary file renamed into place.
absl::Status writeArtifact(const std::string &path, const ModelPlan &plan,
                           const TargetInfo &target, const std::string &code,
                           const std::string &weights);

/// A weights section held in a file (the compiler spools it there): `size`
/// bytes from offset 0 of `fd`, which stays the caller's.
struct WeightsFile {
  int fd = -1;
  uint64_t size = 0;
};
/// The same with the weights copied file to file, never all in memory.
absl::Status writeArtifact(const std::string &path, const ModelPlan &plan,
                           const TargetInfo &target, const std::string &code,
                           const WeightsFile &weights);

} // namespace ds::rt

#endif // DS_RT_PLAN_H
