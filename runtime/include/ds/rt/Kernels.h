//===- Kernels.h - the runtime's hand-written CPU kernels --------*- C++
//-*-===//
//
// The microkernels the execution plan calls for what generated code does not
// do at good speed (IREE's ukernel approach): packed GEMM/GEMV (f32 and int8
// weight-only, dequantized in registers), attention over a slot-indexed KV
// cache (MHA/GQA and DeepSeek's MLA in absorbed form), RoPE, RMSNorm, the MoE
// router and the grouped expert FFN that only touches experts that received
// tokens. Elementwise chains are not here: the compiler generates them.
//
// Activations are row-major f32. Every kernel computes what the reference
// interpreter computes (interpreter/Interpreter.cpp), to 1e-4 relative.
//
// KV caches are slot-indexed: a cache is [slots, maxLen, row] and batch row b
// of an op reads and writes slot `slots[b]`. The runtime maps sequences to
// slots, so a batch can mix sequences, and several rows may share one slot
// (tokens of one prompt packed as rows of length 1).
//
// Kernels take their working memory from the calling thread's ThreadScratch
// (ThreadScratch.h); each says how much through a *Scratch / *ScratchBytes
// function, which the executor's plan reserves for the step's threads.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KERNELS_H
#define DS_RT_KERNELS_H

#include "ds/rt/ThreadScratch.h"

#include <cstddef>
#include <cstdint>
#include <functional>

namespace ds::rt {
class ThreadPool;
}

namespace ds::rt::kernels {

/// Columns per packed panel: one AVX-512 register of f32.
constexpr int64_t kPanel = 16;

/// Weight storage the GEMM kernels read.
enum class WeightFormat : uint32_t {
  /// f32, [ceil(N/16)][K][16]: panel p holds rows 16p..16p+15, K-major.
  F32 = 0,
  /// int8 per-output-row scales, same panel layout in int8, followed by
  /// ceil(N/16)*16 f32 scales. Dequantized in registers.
  I8 = 1,
  /// Signed int4 with one scale per (column, K group): per panel and k, a
  /// little-endian 64-bit word with column 2i in bits 4i..4i+3 and column
  /// 2i + 1 in bits 32+4i..35+4i (each 32-bit half shifted per lane gives
  /// its columns); then scales [panels][ceil(K/group)][16].
  I4 = 2,
  /// FP8 e4m3 with one scale per (column, K group): per panel and k, 16
  /// bytes; then scales [panels][ceil(K/group)][16] (DeepSeek's 128x128
  /// blocks repeat a block's scale over its columns). Widened in registers
  /// through f16 (e4m3 bits << 7 is the f16 of value * 2^-8).
  F8 = 3,
  /// W8A8: int8 weights with per-row scales for an integer dot product with
  /// int8 activations that the GEMM quantizes per row itself (dynamic
  /// absmax / 127, or a static scale), as #ds.act_quant<i8, group = 0>
  /// does. Per panel: [ceil(K/4)][16][4] bytes (4 consecutive k of a column
  /// together, the VNNI operand layout), then 16 f32 scales and 16 int32
  /// column sums per panel. AVX-512 VNNI (vpdpbusd) where present.
  I8Dot = 4,
  /// 2:4 sparse f32 (K % 4 == 0): per panel and group of 4 k, the two kept
  /// values of each column ([2][16] f32), then per panel and group 16 bytes
  /// of in-group indices (first | second << 2). The activations a column
  /// needs are picked in registers (vpermps): half the weight bytes of F32.
  S24 = 5,
  /// bf16 in the F32 panel layout (2 bytes an element, no scales): the
  /// weights of ds-quantize{quantize=bf16}. Widened in registers (<< 16).
  BF16 = 6,
  /// f16 likewise (ds-quantize{quantize=f16}); widened with F16C.
  F16 = 7,
  /// I4 with f16 scales ([panels][ceil(K/group)][16] f16 after the
  /// panels): 4.5 bits a weight at group 32, as llama.cpp's Q4_0. The
  /// scales widen with F16C; the products are I4's.
  I4H = 8,
  /// W4A8: signed int4 with one f16 scale per (column, K group), K groups
  /// a multiple of 8 that divide K, for an integer dot product with int8
  /// activations
  /// that the GEMM quantizes per row itself, as I8Dot (llama.cpp's Q4_0 x
  /// Q8_0 with one activation scale per row): per group, the integer sum
  /// of products, then times the group's scale, added in group order;
  /// times the row's scale at the end. Layout: I4DotLayout (4.5 bits a
  /// weight at group 32). AVX-512 VNNI where present, else AVX2.
  I4Dot = 9,
};

/// A [N, K] GEMM weight (y = x Wᵀ) in packed form. `data` is 64-byte aligned.
struct PackedWeight {
  WeightFormat format = WeightFormat::F32;
  int64_t n = 0, k = 0;
  const void *data = nullptr;
  /// K group of the grouped formats (I4, I4H, I4Dot, F8); 0 otherwise.
  int64_t group = 0;
  /// I8Dot / I4Dot: the static activation scale, or 0 for per-row dynamic
  /// scales.
  float inputScale = 0.0f;
};

/// Bytes `packWeight*` writes for an [n, k] weight.
size_t packedWeightBytes(WeightFormat format, int64_t n, int64_t k,
                         int64_t group = 0);
/// Packs row-major f32 [n, k] into `out` (packedWeightBytes(F32) bytes).
void packWeightF32(const float *w, int64_t n, int64_t k, void *out);
/// Packs row-major f32 [n, k] as bf16 / f16 (rounded to nearest even;
/// exact for values of that precision) into `out`.
void packWeightBF16(const float *w, int64_t n, int64_t k, void *out);
void packWeightF16(const float *w, int64_t n, int64_t k, void *out);
/// Packs row-major int8 [n, k] with per-row `scales` [n] into `out`.
void packWeightI8(const int8_t *q, const float *scales, int64_t n, int64_t k,
                  void *out);

/// Packs int4 values q (-8..7, as floats, row-major [n, k]) with scales
/// [n, ceil(k / group)] into `out`.
void packWeightI4(const float *q, const float *scales, int64_t n, int64_t k,
                  int64_t group, void *out);
/// The same with the scales stored as f16 (WeightFormat::I4H; each scale
/// rounded to nearest even, exact for f16 values).
void packWeightI4H(const float *q, const float *scales, int64_t n, int64_t k,
                   int64_t group, void *out);
/// Packs e4m3 values (as floats, exactly representable) with scales
/// [n, ceil(k / group)] into `out`.
void packWeightF8(const float *values, const float *scales, int64_t n,
                  int64_t k, int64_t group, void *out);

/// Packs int4 values q (-8..7, as floats, row-major [n, k]) with scales
/// [n, k / group] (rounded to f16) for W4A8 (WeightFormat::I4Dot);
/// group % 8 == 0 and k % group == 0.
void packWeightI4Dot(const float *q, const float *scales, int64_t n, int64_t k,
                     int64_t group, void *out);

/// Packs int8 [n, k] with per-row scales for W8A8 (WeightFormat::I8Dot).
void packWeightI8Dot(const int8_t *q, const float *scales, int64_t n, int64_t k,
                     void *out);

/// Packs f32 [n, k] (k % 4 == 0) keeping the two largest magnitudes of every
/// 4 (ties: the lower index), as ds-sparsify-24 prunes; a pruned weight is
/// already zero there, so the product is unchanged.
void packWeightS24(const float *w, int64_t n, int64_t k, void *out);

/// Rows of x quantized as #ds.act_quant<i8, group = 0> does (support's
/// ds::quantize: scale absmax / 127, or `staticScale` when > 0; values
/// nearbyint(x / scale) clamped to [-128, 127]), stored + 128 as uint8 with
/// row stride `ldq` (zero-padded columns hold 128). scales[m] receives the
/// row scales.
void quantizeRowsI8(const float *x, int64_t m, int64_t k, int64_t lda,
                    float staticScale, uint8_t *q, int64_t ldq, float *scales);

/// Whether the CPU has AVX-512 VNNI (the W8A8 kernel's fast path).
bool hasVnni();

/// The precision a bf16 / f16 value of the model is stored in: values stay
/// f32 in memory and are rounded (to nearest even) where the interpreter
/// rounds them, so f32 kernels compute the mixed-precision model.
enum class Round : int32_t { None = 0, BF16 = 1, F16 = 2 };

/// Whether the CPU has AVX512_BF16 (the bf16 x bf16 kernel's vdpbf16ps).
bool hasBF16Dot();

/// How the AMX tile kernels (bf16 x bf16 by tdpbf16ps, W8A8 by tdpbusd)
/// run: not at all; on the CPU's tiles (AMX-TILE, -BF16 and -INT8 with
/// AVX-512, once Linux granted the tile state to the process); or on a C++
/// model of the tiles that follows the instructions' documented arithmetic
/// (DS_CPU_AMX=emulate; slow: it tests the tile kernels' blocking, padding
/// and epilogues on any CPU). DS_CPU_AMX=0 or DS_CPU_AVX2=1 turn them off.
enum class AmxMode : int32_t { Off = 0, Hardware = 1, Emulated = 2 };
AmxMode amxMode();
/// Tests: the tile kernels run in `mode` from now on (Hardware only where
/// the CPU has it; otherwise Off). Returns the mode before. Plans made in
/// one mode must not run in another (their scratch differs).
AmxMode setAmxMode(AmxMode mode);

/// c[m, n] (row stride ldc) = a[m, k] (row stride lda) · Wᵀ (+ bias[n]).
/// With an I8Dot / I4Dot weight, the rows of a are quantized to int8 first
/// (W8A8 / W4A8).
/// `inputs` is the precision the values of a are known to have: with
/// Round::BF16 and a BF16 weight, with AMX tiles (amxMode() not Off) the
/// products are summed by tdpbf16ps: per output, the bias, then per block
/// of 32 k (zero-padded) the even-k and the odd-k products each summed from
/// zero by FMAs in k order, the two sums added and the result added to the
/// output (bf16 denormals read as zero, denormal results flushed). Else, on
/// a CPU with AVX512_BF16 (hasBF16Dot), by vdpbf16ps: per output, the
/// bias, then for each (k, k + 1) pair the product at k + 1 then the one at
/// k, each added with one rounding (as an FMA; bf16 denormals read as
/// zero). Elsewhere every product is an FMA in k order. W8A8's integer sums
/// are exact on every path, AMX's tdpbusd included. Either way a row's result
/// does not depend on m or on the split. Splits columns over `pool` when it is
/// given and the work is large enough.
void gemm(const float *a, int64_t m, int64_t lda, const PackedWeight &w,
          const float *bias, float *c, int64_t ldc, ThreadPool *pool = nullptr,
          Round inputs = Round::None);
/// What gemm takes from ThreadScratch on the calling thread and on each
/// worker it splits over, for m rows of k.
ThreadScratchNeed gemmScratch(int64_t m, int64_t k, WeightFormat format,
                              Round inputs = Round::None);
/// The most gemm takes for any row count from 1 to m (MoE experts get a
/// data-dependent share of the rows, and fewer rows can pick a tile with a
/// larger widening slab).
ThreadScratchNeed gemmScratchUpTo(int64_t m, int64_t k, WeightFormat format,
                                  Round inputs = Round::None);

/// Activation functions, numbered as ds::Activation (#ds.activation).
enum class Act : int32_t {
  Silu = 0,
  Gelu = 1,
  GeluTanh = 2,
  Relu = 3,
  Sigmoid = 4
};
float activate(Act act, float x);

/// x[i] = x[i] rounded to `r`, i < n.
void roundValues(float *x, int64_t n, Round r);

/// y[r, :] = w * (x[r, :] * rsqrt(mean(x[r, :]^2) + eps)), r < rows, d wide;
/// with `round`, the normalized x is rounded before the weight multiplies
/// it and y after, as the interpreter stores a low-precision ds.rms_norm.
void rmsNorm(const float *x, const float *w, int64_t rows, int64_t d,
             double eps, float *y, Round round = Round::None);

/// y[r, c] = act(x[r, c]) * x[r, half + c] for c < half; x rows are 2*half.
void glu(const float *x, int64_t rows, int64_t half, Act act, float *y);

/// out[i, :] = table[ids[i] - first, :] for ids in the table's block of
/// rows [first, first + rows), zeros for the other ids of [0, vocab) (a
/// vocabulary-split embedding); returns the index of the first id outside
/// [0, vocab) or -1.
int64_t embeddingBlock(const float *table, int64_t first, int64_t rows,
                       int64_t vocab, int64_t h, const int64_t *ids, int64_t n,
                       float *out);
/// out[i, :] = table[ids[i], :]; returns the index of the first id outside
/// [0, vocab) or -1.
int64_t embedding(const float *table, int64_t vocab, int64_t h,
                  const int64_t *ids, int64_t n, float *out);

/// Rotary embedding in place over the first `dim` features of every head:
/// x is [tokens, heads, dFull], positions [tokens]. `invFreq` has dim/2
/// entries; cos and sin are multiplied by `scaling` (YaRN's mscale).
/// style: 0 rotate_half, 1 interleaved, 2 deinterleave (ds::RopeStyle).
void rope(float *x, int64_t tokens, int64_t heads, int64_t dFull, int64_t dim,
          const float *invFreq, float scaling, int32_t style,
          const int64_t *positions);
/// What rope takes from ThreadScratch (on the calling thread).
uint64_t ropeScratchBytes(int64_t dim);

/// The element type a KV cache stores: f32, bf16 / f16 (values rounded to
/// nearest even when written, widened exactly when read), or FP8 e4m3fn
/// with a per-cache power-of-two scale s (a value x is stored as the e4m3
/// nearest x / s, saturating at +-448, and read as e4m3 * s, exactly).
enum class KVType : int32_t { F32 = 0, BF16 = 1, F16 = 2, F8E4M3 = 3 };
/// Bytes per element of a cache of type t.
inline int64_t kvTypeSize(KVType t) {
  return t == KVType::F32 ? 4 : t == KVType::F8E4M3 ? 1 : 2;
}

/// dst[0, n) = x[0, n) as a cache of `type` stores them (rounded to nearest
/// even for bf16 / f16 / e4m3; `scale` is an e4m3 cache's scale).
void narrowRow(const float *x, int64_t n, KVType type, void *dst,
               float scale = 1.0f);
/// dst[0, n) = the f32 values of n elements of `type` at src (exact; an
/// e4m3 cache's elements times its `scale`).
void widenRow(const void *src, KVType type, int64_t n, float *dst,
              float scale = 1.0f);

/// cache[slots[b], positions[b, s], :] = update[b, s, :] for b < batch,
/// s < seq; cache rows are `row` elements of `type` (scaled by `scale` for
/// e4m3), maxLen rows per slot.
void cacheUpdate(void *cache, KVType type, int64_t maxLen, int64_t row,
                 const int64_t *slots, const float *update,
                 const int64_t *positions, int64_t batch, int64_t seq,
                 float scale = 1.0f);
inline void cacheUpdate(float *cache, int64_t maxLen, int64_t row,
                        const int64_t *slots, const float *update,
                        const int64_t *positions, int64_t batch, int64_t seq) {
  cacheUpdate(cache, KVType::F32, maxLen, row, slots, update, positions, batch,
              seq);
}

/// Causal attention. q [batch, seq, heads, d]; caches k [slots, maxLen,
/// kvHeads, d] and v [slots, maxLen, kvHeads, dv] of `kvType`; query (b, s)
/// at position p attends to cache rows [max(0, p - window + 1), p] of slot
/// slots[b] (window 0: no window). out [batch, seq, heads, dv]. A narrow
/// cache gives exactly the result of an f32 cache holding its values (for
/// e4m3 caches, their elements times kScale / vScale).
void attention(const float *q, int64_t batch, int64_t seq, int64_t heads,
               int64_t d, const void *k, const void *v, KVType kvType,
               int64_t maxLen, int64_t kvHeads, int64_t dv,
               const int64_t *slots, const int64_t *positions, int64_t window,
               double scale, float *out, ThreadPool *pool = nullptr,
               float kScale = 1.0f, float vScale = 1.0f);
inline void attention(const float *q, int64_t batch, int64_t seq, int64_t heads,
                      int64_t d, const float *k, const float *v, int64_t maxLen,
                      int64_t kvHeads, int64_t dv, const int64_t *slots,
                      const int64_t *positions, int64_t window, double scale,
                      float *out, ThreadPool *pool = nullptr) {
  attention(q, batch, seq, heads, d, k, v, KVType::F32, maxLen, kvHeads, dv,
            slots, positions, window, scale, out, pool);
}

/// DeepSeek MLA in absorbed form. qNope [batch, seq, heads, dn], qPe
/// [batch, seq, heads, dr]; latent cache cKv [slots, maxLen, rank], kPe
/// [slots, maxLen, dr]; kvB row-major [heads * (dn + dv), rank] (per head, dn
/// key rows then dv value rows). Equals expanding keys k = [cKv kvBᵀ, kPe]
/// and values, then causal attention. out [batch, seq, heads, dv].
void mlaAttention(const float *qNope, const float *qPe, int64_t batch,
                  int64_t seq, int64_t heads, int64_t dn, int64_t dr,
                  const float *cKv, const float *kPe, int64_t maxLen,
                  int64_t rank, const float *kvB, int64_t dv,
                  const int64_t *slots, const int64_t *positions, double scale,
                  float *out, ThreadPool *pool = nullptr);

/// The same with the per-head projections as packed GEMMs over all rows:
/// ukT[h] is W_uk of head h transposed ([rank, dn]), uv[h] is W_uv ([dv,
/// rank]); q_abs and the output projection run as `gemm`s (rows = batch *
/// seq, strided by heads), only the attention over the latent cache runs
/// per (row, head). The latent caches cKv and kPe hold `cacheType` (a narrow
/// cache gives exactly the result of an f32 one holding its values: for
/// e4m3 caches, their elements times cKvScale / kPeScale).
/// `ukScales` ([heads, dn]), when given, multiplies the queries before
/// W_ukᵀ (an int8 W_ukᵀ whose scales lie along K).
void mlaAttentionPacked(const float *qNope, const float *qPe, int64_t batch,
                        int64_t seq, int64_t heads, int64_t dn, int64_t dr,
                        const void *cKv, const void *kPe, KVType cacheType,
                        int64_t maxLen, int64_t rank, const PackedWeight *ukT,
                        const PackedWeight *uv, int64_t dv,
                        const int64_t *slots, const int64_t *positions,
                        double scale, float *out, ThreadPool *pool = nullptr,
                        const float *ukScales = nullptr,
                        float *scratch = nullptr, float cKvScale = 1.0f,
                        float kPeScale = 1.0f);
inline void mlaAttentionPacked(const float *qNope, const float *qPe,
                               int64_t batch, int64_t seq, int64_t heads,
                               int64_t dn, int64_t dr, const float *cKv,
                               const float *kPe, int64_t maxLen, int64_t rank,
                               const PackedWeight *ukT, const PackedWeight *uv,
                               int64_t dv, const int64_t *slots,
                               const int64_t *positions, double scale,
                               float *out, ThreadPool *pool = nullptr,
                               const float *ukScales = nullptr,
                               float *scratch = nullptr) {
  mlaAttentionPacked(qNope, qPe, batch, seq, heads, dn, dr, cKv, kPe,
                     KVType::F32, maxLen, rank, ukT, uv, dv, slots, positions,
                     scale, out, pool, ukScales, scratch);
}
/// What attention takes from ThreadScratch on the calling thread and on each
/// worker it splits over (keys up to maxLen).
ThreadScratchNeed attentionScratch(int64_t batch, int64_t seq, int64_t heads,
                                   int64_t d, KVType kvType, int64_t maxLen,
                                   int64_t kvHeads, int64_t dv, int64_t window);
/// What mlaAttentionPacked takes from ThreadScratch (besides `scratch`).
ThreadScratchNeed mlaAttentionScratch(int64_t batch, int64_t seq, int64_t heads,
                                      int64_t dn, int64_t dr, KVType cacheType,
                                      int64_t maxLen, int64_t rank,
                                      WeightFormat ukFormat,
                                      WeightFormat uvFormat);
/// The floats of `scratch` mlaAttentionPacked needs: the absorbed queries
/// and latent outputs of every row and head (and the scaled queries of an
/// int8 W_ukᵀ); null scratch takes it from the calling thread's
/// ThreadScratch.
int64_t mlaScratchFloats(int64_t rows, int64_t heads, int64_t rank, int64_t dn,
                         bool scaledQueries);

/// The MoE router's configuration (#ds.routing).
struct RouterConfig {
  int64_t numExperts = 0; ///< scored experts (all, before pruning)
  int64_t topK = 0;
  bool sigmoid = false; ///< scoring: sigmoid, else softmax
  int64_t nGroup = 1, topkGroup = 1;
  bool groupScoreMax = false; ///< group score: max, else sum of the top two
  bool normTopkProb = false;
  double normEpsilon = 0.0;
  double scalingFactor = 1.0;
  /// Kept experts (sorted global ids) when the model was pruned; null: all.
  const int64_t *kept = nullptr;
  int64_t numKept = 0;
  /// Expert placement: the expert (kept numbering) each of numSlots weight
  /// slots holds; the indices then number the slots (placeOnSlots in
  /// ds/support/ReferenceKernels.h). Null: slot = expert.
  const int64_t *slots = nullptr;
  int64_t numSlots = 0;
};

/// What route takes from ThreadScratch (on the calling thread).
uint64_t routeScratchBytes(const RouterConfig &config);

/// Routes n tokens from logits [n, numExperts] (+ bias [numExperts]):
/// weights [n, topK] and indices [n, topK] (kept-expert numbering, or slot
/// numbering with `slots`).
void route(const float *logits, const float *bias, int64_t n,
           const RouterConfig &config, float *weights, int32_t *indices);

/// The routed experts of a fused MoE. y[t] = Σ_j weights[t, j] ·
/// down_e(act(gate_e x_t) * up_e x_t) with e = indices[t, j]. gateUp[e] is
/// [2I, H] (gate rows then up rows), down[e] is [H, I]. Only experts that
/// received tokens are computed, each once over all its tokens.
/// `hidden`, when set, rewrites each expert's [rows, inter] hidden
/// activations before the down projection (activation quantization).
/// With `round`, the gate/up and down projections and the hidden
/// activations are rounded as the interpreter stores them (y itself is not),
/// and x is taken to be of that precision too (gemm's `inputs`).
/// Returns the first index outside [0, numExperts) or -1 (nothing written).
/// `scratch` (64-byte aligned, moeExpertsScratchBytes of it) holds the
/// dispatch tables, the gathered rows and every expert's intermediate
/// results; the executor plans it in its arena. Null: a buffer of the
/// calling thread's (kernels called directly, as tests and benchmarks do).
/// With `block` (expert parallelism), the weights hold experts
/// [block.first, block.first + numExperts) of indices in [0,
/// block.routed): slots routed to the others add nothing, and the index
/// returned is the first outside [0, block.routed).
struct ExpertBlock {
  int64_t first = 0, routed = 0; ///< routed 0: no block
};
int64_t
moeExperts(const float *x, int64_t n, int64_t h, const float *weights,
           const int32_t *indices, int64_t topK, int64_t numExperts,
           const PackedWeight *gateUp, const PackedWeight *down, int64_t inter,
           Act act, float *y, ThreadPool *pool = nullptr,
           const std::function<void(float *, int64_t, int64_t)> &hidden = {},
           Round round = Round::None, void *scratch = nullptr,
           ExpertBlock block = {});
/// y[t] = Σ_j weights[t, j] · rows[t * topK + j] ([n * topK, h]: one row
/// per slot), each token's slots added in ascending `indices` order from
/// zero, exactly as moeExperts adds its experts' outputs: what a token's
/// slots computed on other processes (expert parallelism with an
/// all-to-all) come back to.
void moeCombine(const float *rows, int64_t n, int64_t h, const float *weights,
                const int32_t *indices, int64_t topK, float *y);
/// The scratch moeExperts needs for these sizes (whatever the routing).
uint64_t moeExpertsScratchBytes(int64_t n, int64_t h, int64_t topK,
                                int64_t numExperts, int64_t inter);

/// Whether the CPU has the AVX-512 kernels' features (else AVX2 kernels run).
bool hasAvx512();

} // namespace ds::rt::kernels

#endif // DS_RT_KERNELS_H
