//===- ds-bench.cpp - runtime kernel and serving benchmarks ---------------===//
//
//   ds-bench [--model M.dsa] [--jit DIR|M.mlir [--jit-optimize OPTS]]
//            [--torch bench/moe-torch.sh] [--reps N]
//            [--only moe|gemm|int8|batch|attention|jit]
//   ds-bench --only model --model M.dsa [--threads T] [--prompt-len P]
//            [--gen G [--batch B]]
//
// Prints figures, each beside a baseline measured in the same run (medians
// of --reps timed repetitions, one thread unless stated):
//   1. MoE layer (hidden 1024, 8 experts top-2 softmax renormalized + one
//      shared expert, SwiGLU 1408, f32) at T = 1, 64, 256: tokens/s and the
//      fraction of the roofline, from a stream-read bandwidth and an FMA peak
//      measured here; then warm (weights cached, as PyTorch is timed) on 1
//      and every core, beside the PyTorch peer (--torch: bench/moe-torch.sh
//      runs ../shared/baselines/moe_torch.py in its own virtual env);
//   2. f32 GEMM 512x512x512, 32x4096x4096, the MoE layer's expert shapes
//      (T x 2816 x 1024, T x 1024 x 1408 at T = 64, 256) and GEMV
//      1x4096x4096 against oneDNN's sgemm, on one thread and on every core;
//      the GEMV also as a fraction of stream bandwidth;
//   3. the MoE layer with int8 weight-only experts against f32 at T = 1;
//   4. with --model (a ds-compile artifact with @decode): decode throughput
//      at batch 32 against batch 1, and latency percentiles of the batcher
//      under concurrent submitters;
//   5. with --jit (a model directory or .mlir; ds-bench built with the
//      compiler): the first ds_model_compile into an empty cache, and the
//      warm start from that cache, as an embedding program sees them;
//   6. attention against its roofline: decode at context 4096 (DeepSeek-V3
//      MLA, a GQA layer) and a GQA prefill of 1024 tokens;
//   7. --only model: the whole model as llama-bench times it, a prompt of P
//      tokens or G decoded tokens of B sequences at once, decode against the
//      weight-streaming roofline, and the artifact's load time
//      (bench/llama-cpp.sh and bench/real-width.sh read its "model-rate").
// Every timed run starts with cold caches (256 MiB read first): weights come
// from memory, as in decode. Figures are printed, never asserted: machines
// are noisy.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Batcher.h"
#include "ds/rt/CpuInfo.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/MemoryPlanner.h"
#include "ds/rt/ThreadPool.h"
#include "ds/runtime.h"
#include "ds/support/DType.h"

#include <dnnl.h>
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace ds::rt;
using namespace ds::rt::kernels;

namespace {

int reps = 15;

/// Evicts the caches (reads 256 MiB) so that every timed run streams its
/// weights from memory, as decode does when many experts take turns.
void flushCaches() {
  static std::vector<float> junk((256u << 20) / sizeof(float), 1.0f);
  static volatile float sink;
  float s = 0;
  for (size_t i = 0; i < junk.size(); i += 16)
    s += junk[i];
  sink = s;
}

/// Median of `n` timed runs after a warm-up; with `cold`, the caches are
/// evicted before each run, else the runs are steady state.
double timeMedian(const std::function<void()> &fn, int n, bool cold) {
  for (int i = 0; i < (cold ? 1 : 20); ++i)
    fn(); // warm-up
  std::vector<double> t;
  for (int i = 0; i < n; ++i) {
    if (cold)
      flushCaches();
    auto a = std::chrono::steady_clock::now();
    fn();
    t.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - a)
            .count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double medianSeconds(const std::function<void()> &fn, int n = reps) {
  return timeMedian(fn, n, /*cold=*/true);
}

/// Steady state (caches kept), with more runs since each is short.
double warmMedianSeconds(const std::function<void()> &fn) {
  return timeMedian(fn, 5 * reps, /*cold=*/false);
}

struct Buffer {
  std::vector<char> raw;
  void *data;
  explicit Buffer(size_t bytes) : raw(bytes + 64) {
    auto p = reinterpret_cast<uintptr_t>(raw.data());
    data = reinterpret_cast<void *>((p + 63) & ~uintptr_t{63});
  }
};

std::vector<float> randomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = d(rng);
  return v;
}

/// A weight packed as f32, bf16, int8 per row, int4 or FP8 with K groups of 128
/// (quantized by absmax, as ds-quantize does without the clip search).
struct Packed {
  Buffer buf;
  PackedWeight w;
  Packed(const std::vector<float> &src, int64_t n, int64_t k,
         WeightFormat format = WeightFormat::F32)
      : buf(packedWeightBytes(format, n, k, groupOf(format, k))) {
    int64_t group = groupOf(format, k);
    if (format == WeightFormat::F32) {
      packWeightF32(src.data(), n, k, buf.data);
    } else if (format == WeightFormat::BF16) {
      packWeightBF16(src.data(), n, k, buf.data); // rounds to bf16
    } else if (format == WeightFormat::S24) {
      packWeightS24(src.data(), n, k, buf.data); // prunes 2 of every 4
    } else if (format == WeightFormat::I8 || format == WeightFormat::I8Dot) {
      std::vector<int8_t> q(n * k);
      std::vector<float> s(n);
      for (int64_t r = 0; r < n; ++r) {
        float mx = 1e-12f;
        for (int64_t c = 0; c < k; ++c)
          mx = std::max(mx, std::abs(src[r * k + c]));
        s[r] = mx / 127.0f;
        for (int64_t c = 0; c < k; ++c)
          q[r * k + c] =
              static_cast<int8_t>(std::lround(src[r * k + c] / s[r]));
      }
      if (format == WeightFormat::I8)
        packWeightI8(q.data(), s.data(), n, k, buf.data);
      else
        packWeightI8Dot(q.data(), s.data(), n, k, buf.data);
    } else {
      int64_t groups = (k + group - 1) / group;
      const bool int4 = format == WeightFormat::I4 ||
                        format == WeightFormat::I4H ||
                        format == WeightFormat::I4Dot;
      float qmax = int4 ? 7.0f : 448.0f;
      std::vector<float> q(n * k), s(n * groups);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t g = 0; g < groups; ++g) {
          float mx = 1e-12f;
          for (int64_t c = g * group; c < std::min(k, (g + 1) * group); ++c)
            mx = std::max(mx, std::abs(src[r * k + c]));
          s[r * groups + g] = mx / qmax;
          if (format == WeightFormat::I4H ||
              format == WeightFormat::I4Dot) // stored as f16
            s[r * groups + g] =
                ds::halfToFloat(ds::floatToHalf(s[r * groups + g]));
          for (int64_t c = g * group; c < std::min(k, (g + 1) * group); ++c) {
            float v = src[r * k + c] / s[r * groups + g];
            q[r * k + c] = int4 ? std::clamp(std::round(v), -8.0f, 7.0f)
                                : v; // packWeightF8 rounds to e4m3
          }
        }
      if (format == WeightFormat::I4)
        packWeightI4(q.data(), s.data(), n, k, group, buf.data);
      else if (format == WeightFormat::I4H)
        packWeightI4H(q.data(), s.data(), n, k, group, buf.data);
      else if (format == WeightFormat::I4Dot)
        packWeightI4Dot(q.data(), s.data(), n, k, group, buf.data);
      else
        packWeightF8(q.data(), s.data(), n, k, group, buf.data);
    }
    w = {format, n, k, buf.data, group};
  }
  static int64_t groupOf(WeightFormat f, int64_t k) {
    if (f == WeightFormat::I4Dot) // groups of 32 (Q4_0's) divide K here
      return 32;
    return f == WeightFormat::I4 || f == WeightFormat::I4H ||
                   f == WeightFormat::F8
               ? std::min<int64_t>(128, k)
               : 0;
  }
};

/// Stream read bandwidth of one core (bytes/s) over 512 MiB: eight vector
/// accumulators, so the adds keep up with memory.
template <int W, int S> double streamRead(const float *a, size_t n) {
  // S streams at once (S chunks): one stream alone is limited by its
  // prefetcher, not by memory. The best S is taken.
  typedef float vf __attribute__((vector_size(W * 4), aligned(4)));
  vf acc[S] = {};
  size_t chunk = n / S;
  for (size_t i = 0; i + W <= chunk; i += W)
    for (int j = 0; j < S; ++j) {
      vf v;
      std::memcpy(&v, a + j * chunk + i, sizeof(vf));
      acc[j] += v;
    }
  float s = 0;
  for (int j = 0; j < S; ++j)
    for (int l = 0; l < W; ++l)
      s += acc[j][l];
  return s;
}
template <int S>
__attribute__((target("avx512f"))) double streamRead512(const float *a,
                                                        size_t n) {
  return streamRead<16, S>(a, n);
}
template <int S>
__attribute__((target("avx2"))) double streamRead256(const float *a, size_t n) {
  return streamRead<8, S>(a, n);
}
template <int S> double streamReadBest(const float *a, size_t n) {
  return hasAvx512() ? streamRead512<S>(a, n) : streamRead256<S>(a, n);
}
double streamBandwidth() {
  // A huge-page arena, as the runtime's buffers are: no TLB misses to
  // understate the bandwidth.
  size_t n = (512u << 20) / sizeof(float);
  absl::StatusOr<Arena> arena = Arena::create(n * sizeof(float));
  if (!arena.ok())
    return 1;
  auto *a = reinterpret_cast<float *>(arena->data());
  std::fill(a, a + n, 1.0f);
  volatile double sink = 0;
  double best = 0;
  for (auto read : {&streamReadBest<1>, &streamReadBest<4>, &streamReadBest<8>,
                    &streamReadBest<16>}) {
    double t = medianSeconds([&] { sink = read(a, n); }, 3);
    best = std::max(best, n * sizeof(float) / t);
  }
  (void)sink;
  return best;
}

/// Peak f32 FLOP/s of one core: 12 independent FMA chains on full-width
/// registers (AVX-512 or AVX2, as the kernels use).
template <int W> float fmaChains(long iters) {
  typedef float vf __attribute__((vector_size(W * 4)));
  vf acc[12] = {};
  vf x, y;
  for (int i = 0; i < W; ++i) {
    x[i] = 1.0f + i * 1e-7f;
    y[i] = 0.999999f;
  }
  for (long i = 0; i < iters; ++i)
    for (int j = 0; j < 12; ++j)
      acc[j] = acc[j] * y + x;
  float s = 0;
  for (int j = 0; j < 12; ++j)
    s += acc[j][0];
  return s;
}
__attribute__((target("avx512f,fma"))) float fmaChains512(long iters) {
  return fmaChains<16>(iters);
}
__attribute__((target("avx2,fma"))) float fmaChains256(long iters) {
  return fmaChains<8>(iters);
}
double fmaLoopPeak() {
  const long iters = 20'000'000;
  const int width = hasAvx512() ? 16 : 8;
  volatile float sink = 0;
  double t = medianSeconds(
      [&] { sink = hasAvx512() ? fmaChains512(iters) : fmaChains256(iters); },
      3);
  (void)sink;
  return 2.0 * width * 12 * iters / t;
}

/// FLOP/s of AVX512_BF16's vdpbf16ps on one core (24 independent
/// accumulators; 64 FLOPs an instruction), or 0 without AVX512_BF16: what
/// a bf16 dot-product kernel could reach at best, against fmaPeak().
__attribute__((target("avx512f,avx512bf16"))) float dpbf16Chains(long iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i)
    acc[i] = _mm512_set1_ps(static_cast<float>(i));
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  __m512bh y = (__m512bh)_mm512_set1_epi32(0x3f7f3f7f);
  for (long i = 0; i < iters; ++i) {
    for (int j = 0; j < 24; ++j)
      acc[j] = _mm512_dpbf16_ps(acc[j], x, y);
    asm volatile("" : "+v"(acc[0]), "+v"(acc[11]), "+v"(acc[23]));
  }
  float s = 0;
  for (int j = 0; j < 24; ++j)
    s += _mm512_reduce_add_ps(acc[j]);
  return s;
}
double dpbf16Peak() {
  if (!cpuInfo().avx512bf16)
    return 0;
  const long iters = 10'000'000;
  volatile float sink = 0;
  double t = medianSeconds([&] { sink = dpbf16Chains(iters); }, 3);
  (void)sink;
  return 64.0 * 24 * iters / t;
}

/// The larger of the FMA loop and the GEMM microkernel on an L1-resident
/// problem (what the kernels can reach with no memory traffic).
double fmaPeak() {
  const int64_t m = 12, n = 32, k = 256;
  std::vector<float> a = randomFloats(m * k, 5), w = randomFloats(n * k, 6);
  std::vector<float> c(m * n);
  Packed p(w, n, k);
  const int inner = 2000;
  double t = medianSeconds(
      [&] {
        for (int i = 0; i < inner; ++i)
          gemm(a.data(), m, k, p.w, nullptr, c.data(), n);
      },
      5);
  return std::max(fmaLoopPeak(), 2.0 * m * n * k * inner / t);
}

struct MoELayer {
  static constexpr int64_t H = 1024, I = 1408, E = 8, K = 2;
  std::vector<Packed> gateUp, down;
  Packed router, sharedGateUp, sharedDown;
  /// The model's activation precision: with Round::BF16 (a bf16 model,
  /// ds-quantize's bf16 scheme) x must hold bf16 values and the experts'
  /// activations are rounded as the interpreter stores them, so bf16
  /// weights take the vdpbf16ps kernel where the CPU has it.
  Round round = Round::None;
  // int8: routed and shared experts int8 weight-only, the router in f32 (as
  // ds-quantize does).
  MoELayer(WeightFormat format, Round round = Round::None)
      : round(round), router(randomFloats(E * H, 1, 0.02f), E, H),
        sharedGateUp(randomFloats(2 * I * H, 2, 0.02f), 2 * I, H, format),
        sharedDown(randomFloats(H * I, 3, 0.02f), H, I, format) {
    for (int64_t e = 0; e < E; ++e) {
      gateUp.emplace_back(randomFloats(2 * I * H, 10 + e, 0.02f), 2 * I, H,
                          format);
      down.emplace_back(randomFloats(H * I, 20 + e, 0.02f), H, I, format);
    }
  }
  void run(const float *x, int64_t t, float *y, ThreadPool *pool = nullptr) {
    thread_local std::vector<float> logits, w, gu, hid, shared;
    thread_local std::vector<int32_t> idx;
    logits.resize(t * E);
    w.resize(t * K);
    idx.resize(t * K);
    gu.resize(t * 2 * I);
    hid.resize(t * I);
    shared.resize(t * H);
    gemm(x, t, H, router.w, nullptr, logits.data(), E, pool);
    RouterConfig rc;
    rc.numExperts = E;
    rc.topK = K;
    rc.normTopkProb = true;
    route(logits.data(), nullptr, t, rc, w.data(), idx.data());
    std::vector<PackedWeight> g, d;
    for (int64_t e = 0; e < E; ++e) {
      g.push_back(gateUp[e].w);
      d.push_back(down[e].w);
    }
    moeExperts(x, t, H, w.data(), idx.data(), K, E, g.data(), d.data(), I,
               Act::Silu, y, pool, {}, round);
    gemm(x, t, H, sharedGateUp.w, nullptr, gu.data(), 2 * I, pool, round);
    roundValues(gu.data(), t * 2 * I, round);
    glu(gu.data(), t, I, Act::Silu, hid.data());
    roundValues(hid.data(), t * I, round);
    gemm(hid.data(), t, I, sharedDown.w, nullptr, shared.data(), H, pool,
         round);
    for (int64_t i = 0; i < t * H; ++i)
      y[i] += shared[i];
  }
  /// Experts that tokens of `x` select (for the memory roofline).
  int64_t touched(const float *x, int64_t t) {
    std::vector<float> logits(t * E), w(t * K);
    std::vector<int32_t> idx(t * K);
    gemm(x, t, H, router.w, nullptr, logits.data(), E);
    RouterConfig rc;
    rc.numExperts = E;
    rc.topK = K;
    rc.normTopkProb = true;
    route(logits.data(), nullptr, t, rc, w.data(), idx.data());
    std::vector<bool> used(E);
    for (int32_t i : idx)
      used[i] = true;
    return std::count(used.begin(), used.end(), true);
  }
};

/// Runs the PyTorch MoE peer (bench/moe-torch.sh, which runs
/// ../shared/baselines/moe_torch.py) for T = 1, 64, 256 on 1 and `cores`
/// threads; tokens/s by (threads, T), empty when it fails.
std::map<std::pair<unsigned, int64_t>, double>
torchMoE(const std::string &script, unsigned cores) {
  std::map<std::pair<unsigned, int64_t>, double> out;
  std::string cmd = script + " --tokens 1 64 256 --threads 1";
  if (cores > 1)
    cmd += " " + std::to_string(cores);
  FILE *p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p)
    return out;
  char line[1024];
  while (std::fgets(line, sizeof(line), p)) {
    unsigned thr;
    long long t;
    const char *tok = std::strstr(line, "tok/s");
    if (std::sscanf(line, "MoE thr=%u T=%lld", &thr, &t) == 2 && tok)
      out[{thr, static_cast<int64_t>(t)}] = std::atof(tok + 5);
    else if (std::strncmp(line, "torch ", 6) == 0)
      std::printf("peer: %s", line);
  }
  if (pclose(p) != 0 || out.empty())
    std::printf("peer: `%s` failed\n", cmd.c_str());
  return out;
}

std::string torchScript;

void benchMoE(double bw, double peak, bool alsoInt8) {
  MoELayer f32(WeightFormat::F32);
  std::printf("\n== 1. MoE layer (H=1024, 8 experts top-2 + shared, I=1408, "
              "f32, 1 thread)\n");
  std::printf("%6s %12s %12s %12s %10s  %s\n", "T", "tokens/s", "time ms",
              "roofline ms", "% roof", "bound");
  for (int64_t t : {1, 64, 256}) {
    std::vector<float> x = randomFloats(t * MoELayer::H, 99, 1.0f);
    std::vector<float> y(t * MoELayer::H);
    double s = medianSeconds([&] { f32.run(x.data(), t, y.data()); });
    int64_t experts = f32.touched(x.data(), t);
    double expertBytes = 3.0 * MoELayer::H * MoELayer::I * sizeof(float);
    double bytes = (experts + 1) * expertBytes + 8.0 * MoELayer::H * 4;
    double flops = 2.0 * t *
                   (MoELayer::E * MoELayer::H +
                    (MoELayer::K + 1) * 3.0 * MoELayer::H * MoELayer::I);
    double roof = std::max(bytes / bw, flops / peak);
    std::printf(
        "%6lld %12.0f %12.3f %12.3f %9.1f%%  %s (%lld experts touched)\n",
        static_cast<long long>(t), t / s, s * 1e3, roof * 1e3, 100.0 * roof / s,
        bytes / bw > flops / peak ? "memory" : "compute",
        static_cast<long long>(experts));
  }
  {
    // Where the time goes at T = 64 (each part cold, as above).
    const int64_t t = 64, H = MoELayer::H, I = MoELayer::I;
    std::vector<float> x = randomFloats(t * H, 99, 1.0f), y(t * H),
                       logits(t * MoELayer::E), w(t * MoELayer::K),
                       gu(t * 2 * I), hid(t * I);
    std::vector<int32_t> idx(t * MoELayer::K);
    RouterConfig rc;
    rc.numExperts = MoELayer::E;
    rc.topK = MoELayer::K;
    rc.normTopkProb = true;
    double router = medianSeconds([&] {
      gemm(x.data(), t, H, f32.router.w, nullptr, logits.data(), MoELayer::E);
      route(logits.data(), nullptr, t, rc, w.data(), idx.data());
    });
    std::vector<PackedWeight> g, d;
    for (int64_t e = 0; e < MoELayer::E; ++e) {
      g.push_back(f32.gateUp[e].w);
      d.push_back(f32.down[e].w);
    }
    double experts = medianSeconds([&] {
      moeExperts(x.data(), t, H, w.data(), idx.data(), MoELayer::K, MoELayer::E,
                 g.data(), d.data(), I, Act::Silu, y.data());
    });
    double shared = medianSeconds([&] {
      gemm(x.data(), t, H, f32.sharedGateUp.w, nullptr, gu.data(), 2 * I);
      glu(gu.data(), t, I, Act::Silu, hid.data());
      gemm(hid.data(), t, I, f32.sharedDown.w, nullptr, y.data(), H);
    });
    std::printf("T=64 parts: router %.3f ms, routed experts %.3f ms, shared "
                "expert %.3f ms\n",
                router * 1e3, experts * 1e3, shared * 1e3);
  }
  {
    // Warm (weights in cache across repeated calls), the protocol the
    // PyTorch peer uses, on one thread and on every core.
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::map<std::pair<unsigned, int64_t>, double> peer;
    if (!torchScript.empty())
      peer = torchMoE(torchScript, cores);
    std::printf("warm, as PyTorch is timed (moe_torch.py%s):\n",
                torchScript.empty() ? " not run: --torch SCRIPT" : "");
    std::printf("%6s %4s %12s %12s %8s\n", "T", "thr", "ds tok/s",
                "torch tok/s", "ratio");
    for (unsigned threads : {1u, cores}) {
      if (threads == cores && cores == 1)
        break;
      ThreadPool pool(threads - 1);
      for (int64_t t : {1, 64, 256}) {
        std::vector<float> x = randomFloats(t * MoELayer::H, 99, 1.0f),
                           y(t * MoELayer::H);
        double s = timeMedian([&] { f32.run(x.data(), t, y.data(), &pool); },
                              t == 1 ? 5 * reps : reps, /*cold=*/false);
        auto it = peer.find({threads, t});
        if (it != peer.end())
          std::printf("%6lld %4u %12.0f %12.0f %7.2fx\n",
                      static_cast<long long>(t), threads, t / s, it->second,
                      t / s / it->second);
        else
          std::printf("%6lld %4u %12.0f %12s %8s\n", static_cast<long long>(t),
                      threads, t / s, "-", "-");
      }
    }
  }
  if (!alsoInt8)
    return;
  MoELayer i8(WeightFormat::I8);
  std::printf("\n== 3. MoE layer, int8 weight-only (routed + shared experts) "
              "vs f32, T=1 (other formats for comparison)\n");
  std::vector<float> x = randomFloats(MoELayer::H, 7, 1.0f), y(MoELayer::H);
  double a = medianSeconds([&] { f32.run(x.data(), 1, y.data()); });
  double b = medianSeconds([&] { i8.run(x.data(), 1, y.data()); });
  std::printf("f32 %.3f ms (%.0f tok/s), int8 %.3f ms (%.0f tok/s): %.2fx\n",
              a * 1e3, 1 / a, b * 1e3, 1 / b, a / b);
  {
    // The int8 roofline: a quarter of f32's bytes, but every weight is
    // widened to f32 in registers, so a core that widens slowly is bound by
    // that instead. The kernel's widening rate is measured on a GEMV whose
    // weights stay in L2 (no memory traffic).
    const int64_t n = 256, k = MoELayer::H;
    Packed l2(randomFloats(n * k, 8, 0.02f), n, k, WeightFormat::I8);
    std::vector<float> out(n);
    double g = warmMedianSeconds(
        [&] { gemm(x.data(), 1, k, l2.w, nullptr, out.data(), n); });
    double rate = n * k / g;
    double weights =
        (f32.touched(x.data(), 1) + 1) * 3.0 * MoELayer::H * MoELayer::I;
    double f32Roof = weights * 4 / bw;
    double i8Roof = std::max(weights / bw, weights / rate);
    std::printf("int8 roofline: weights stream at %.1f Gweights/s, the int8 "
                "kernel widens %.1f Gweights/s (in L2) -> %.3f ms at T=1, "
                "%.2fx the f32 roofline (%.3f ms); int8 measured at %.0f%% "
                "of it\n",
                bw / 1e9, rate / 1e9, i8Roof * 1e3, f32Roof / i8Roof,
                f32Roof * 1e3, 100.0 * i8Roof / b);
  }
  for (auto [format, name] :
       {std::pair{WeightFormat::BF16, "bf16"},
        std::pair{WeightFormat::I4, "int4 g128"},
        std::pair{WeightFormat::I4H, "int4 g128, f16 scales"},
        std::pair{WeightFormat::F8, "fp8 e4m3 g128"},
        std::pair{WeightFormat::I8Dot, amxMode() == AmxMode::Emulated
                                           ? "w8a8 (AMX EMULATED)"
                                       : hasVnni() ? "w8a8 (VNNI)"
                                                   : "w8a8 (AVX2, no VNNI)"},
        std::pair{WeightFormat::I4Dot,
                  hasVnni() ? "w4a8 g32 (VNNI)" : "w4a8 g32 (AVX2, no VNNI)"},
        std::pair{WeightFormat::S24, "2:4 sparse f32"}}) {
    MoELayer q(format);
    double t = medianSeconds([&] { q.run(x.data(), 1, y.data()); });
    std::printf("  also %s: %.3f ms (%.0f tok/s): %.2fx f32\n", name, t * 1e3,
                1 / t, a / t);
  }
  {
    // bf16 at prefill size: compute-bound. A bf16 model (activations in
    // bf16 too) takes vdpbf16ps where the CPU has AVX512_BF16; bf16 weights
    // under f32 activations are widened to f32 in registers.
    MoELayer bf(WeightFormat::BF16), bfModel(WeightFormat::BF16, Round::BF16);
    const int64_t t = 256;
    std::vector<float> xs = randomFloats(t * MoELayer::H, 98, 1.0f),
                       ys(t * MoELayer::H);
    std::vector<float> xb = xs;
    roundValues(xb.data(), t * MoELayer::H, Round::BF16);
    double f = medianSeconds([&] { f32.run(xs.data(), t, ys.data()); });
    double h = medianSeconds([&] { bf.run(xs.data(), t, ys.data()); });
    double hb = medianSeconds([&] { bfModel.run(xb.data(), t, ys.data()); });
    std::printf("  bf16 weights, f32 activations, T=256: %.3f ms vs f32 %.3f "
                "ms: %.2fx f32 (widened to f32 for the FMAs)\n",
                h * 1e3, f * 1e3, f / h);
    std::printf("  bf16 model (bf16 activations), T=256: %.3f ms: %.2fx f32 "
                "(%s)\n",
                hb * 1e3, f / hb,
                amxMode() == AmxMode::Hardware   ? "AMX tiles, tdpbf16ps"
                : amxMode() == AmxMode::Emulated ? "AMX tiles EMULATED: not a "
                                                   "speed"
                : hasBF16Dot() ? "vdpbf16ps"
                               : "no AVX512_BF16: widened to f32 for the FMAs");
  }
}

/// oneDNN's OpenMP thread count (libgomp, loaded with libdnnl): looked up
/// at run time so that ds-bench does not link an OpenMP runtime itself.
void setDnnlThreads(int n) {
  using SetThreads = void (*)(int);
  static auto set =
      reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (set)
    set(n);
}

void benchGemm(double bw) {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::printf("\n== 2. f32 GEMM / GEMM at the MoE expert shapes / GEMV vs "
              "oneDNN sgemm (1 and %u threads)\n",
              cores);
  std::printf("%-18s %3s %10s %10s %10s %8s\n", "M x N x K", "thr", "ds GF/s",
              "oneDNN", "ratio", "GB/s");
  struct Shape {
    int64_t m, n, k;
  };
  for (Shape s :
       {Shape{512, 512, 512}, Shape{32, 4096, 4096}, Shape{64, 2816, 1024},
        Shape{64, 1024, 1408}, Shape{256, 2816, 1024}, Shape{256, 1024, 1408},
        Shape{1, 4096, 4096}}) {
    std::vector<float> a = randomFloats(s.m * s.k, 1),
                       w = randomFloats(s.n * s.k, 2);
    std::vector<float> c(s.m * s.n), c2(s.m * s.n);
    Packed p(w, s.n, s.k);
    for (unsigned threads : {1u, cores}) {
      if (threads == cores && cores == 1)
        break;
      ThreadPool pool(threads - 1);
      setDnnlThreads(static_cast<int>(threads));
      double ours = medianSeconds([&] {
        gemm(a.data(), s.m, s.k, p.w, nullptr, c.data(), s.n, &pool);
      });
      double theirs = medianSeconds([&] {
        dnnl_sgemm('N', 'T', s.m, s.n, s.k, 1.0f, a.data(), s.k, w.data(), s.k,
                   0.0f, c2.data(), s.n);
      });
      setDnnlThreads(1);
      double err = 0, mag = 0;
      for (size_t i = 0; i < c.size(); ++i) {
        err = std::max(err, static_cast<double>(std::abs(c[i] - c2[i])));
        mag = std::max(mag, static_cast<double>(std::abs(c2[i])));
      }
      double flops = 2.0 * s.m * s.n * s.k;
      double gbs = s.n * s.k * 4.0 / ours / 1e9;
      std::printf("%5lldx%5lldx%5lld %3u %10.1f %10.1f %9.2fx %8.1f%s\n",
                  static_cast<long long>(s.m), static_cast<long long>(s.n),
                  static_cast<long long>(s.k), threads, flops / ours / 1e9,
                  flops / theirs / 1e9, theirs / ours, gbs,
                  err / mag > 1e-4 ? "  (RESULTS DIFFER)" : "");
      if (s.m == 1 && threads == 1)
        std::printf("GEMV weight stream: %.1f GB/s = %.0f%% of the %.1f GB/s "
                    "stream bandwidth\n",
                    gbs, 100.0 * gbs * 1e9 / bw, bw / 1e9);
    }
  }
}

void benchBatching(const std::string &path) {
  std::printf("\n== 4. dynamic batching on %s\n", path.c_str());
  auto model = Model::load(path);
  if (!model.ok()) {
    std::printf("cannot load: %s\n",
                std::string(model.status().message()).c_str());
    return;
  }
  int64_t vocab = (*model)->plan().vocabSize;
  // Decode throughput: B sequences, one token each per step.
  auto decodeRate = [&](int64_t b, bool cold, unsigned workers) {
    auto session = Session::create(*model, b, workers);
    std::vector<int64_t> tokens(b), positions(b), slots(b);
    for (int64_t i = 0; i < b; ++i) {
      tokens[i] = (i * 7 + 3) % vocab;
      positions[i] = 4;
      slots[i] = i;
    }
    auto step = [&] {
      auto r = (*session)->step(tokens, positions, slots);
      if (!r.ok())
        std::abort();
    };
    double s = cold ? medianSeconds(step) : warmMedianSeconds(step);
    return b / s;
  };
  // One thread, then every core: the session splits a step's rows over its
  // workers when there are enough of them (batch 1 runs on one thread
  // either way).
  unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<unsigned> configs{0};
  if (cores > 1)
    configs.push_back(cores - 1);
  for (unsigned workers : configs) {
    for (bool cold : {false, true}) {
      double one = decodeRate(1, cold, workers),
             many = decodeRate(32, cold, workers);
      std::printf("decode, %u thread%s, %s: batch 1 %.0f tok/s, batch 32 %.0f "
                  "tok/s: %.1fx\n",
                  workers + 1, workers ? "s" : "",
                  cold ? "cold caches (weights from memory every step)"
                       : "warm caches (the tiny model's weights stay in cache)",
                  one, many, many / one);
    }
  }
  for (int64_t b : {1, 32}) {
    auto session = Session::create(*model, b, 0);
    std::vector<int64_t> tokens(b, 3), positions(b, 4), slots(b);
    for (int64_t i = 0; i < b; ++i)
      slots[i] = i;
    (*session)->executor().setProfiling(true);
    for (int i = 0; i < 200; ++i)
      (void)(*session)->step(tokens, positions, slots);
    std::printf("time per step kind, batch %lld, 200 steps:\n%s",
                static_cast<long long>(b), (*session)->profileReport().c_str());
  }
  BatcherOptions options;
  options.maxBatchSize = 32;
  options.maxWait = std::chrono::microseconds(1000);
  options.threads = cores - 1;
  auto batcher = Batcher::create(*model, options);
  const int threads = 32, perThread = 8;
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < perThread; ++i) {
        std::vector<int64_t> prompt(1 + rng() % 8);
        for (int64_t &id : prompt)
          id = static_cast<int64_t>(rng() % vocab);
        auto r = (*batcher)->submit(prompt, 8).get();
        if (!r.ok())
          std::printf("request failed: %s\n",
                      std::string(r.status().message()).c_str());
      }
    });
  for (std::thread &t : pool)
    t.join();
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  BatcherStats st = (*batcher)->stats();
  double mean = 0;
  for (size_t i = 0; i < st.batchHistogram.size(); ++i)
    mean += static_cast<double>(i) * st.batchHistogram[i];
  mean /= std::max<int64_t>(st.steps, 1);
  std::printf("batcher (%u threads): %d submitters x %d requests (8 new "
              "tokens each): %lld done in %.2f s, %.0f generated tok/s, mean "
              "batch %.1f, max queue %lld\n",
              cores, threads, perThread, static_cast<long long>(st.completed),
              secs, st.generatedTokens / secs, mean,
              static_cast<long long>(st.maxQueueDepth));
  std::printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", st.p50Ms,
              st.p90Ms, st.p99Ms, st.maxMs);
}

/// Decode against the weight-streaming roofline: the weight bytes one step
/// of `batch` sequences reads (an expert stack as the expected share of its
/// experts that top-k routing touches, uniform over the experts: 1 - (1 -
/// k/E)^batch; an embedding table as `batch` rows; the rest whole), read
/// at the stream bandwidth measured here.
void printDecodeRoofline(const Model &model, int64_t batch, double rate) {
  const ds::rt::ModelPlan &plan = model.plan();
  const ds::rt::FunctionPlan *decode = nullptr;
  for (const auto &f : plan.functions)
    if (f.name == "decode")
      decode = &f;
  if (!decode)
    return;
  double bytes = 0, share = 1;
  std::vector<bool> counted(plan.weights.size(), false);
  for (const ds::rt::Step &step : decode->steps) {
    if (step.op() == ds::rt::OpCode::Router) {
      const auto &r = step.as<ds::rt::steps::Router>();
      if (r.numExperts > 0)
        share = 1.0 - std::pow(1.0 - static_cast<double>(r.topK) /
                                         static_cast<double>(r.numExperts),
                               static_cast<double>(batch));
    }
    for (int32_t id : step.weights) {
      if (id < 0 || static_cast<size_t>(id) >= counted.size() || counted[id])
        continue;
      counted[id] = true;
      const ds::rt::WeightInfo &w = plan.weights[id];
      double b = static_cast<double>(w.bytes);
      if (step.op() == ds::rt::OpCode::MoE)
        b *= share;
      else if (step.op() == ds::rt::OpCode::Embedding && !w.shape.empty())
        b *= std::min(1.0, static_cast<double>(batch) /
                               static_cast<double>(w.shape[0]));
      bytes += b;
    }
  }
  const double bw = streamBandwidth();
  const double roofline = static_cast<double>(batch) * bw / bytes;
  std::printf("decode roofline: %.2f GB of weights per step at %.1f GB/s "
              "(stream read measured here): %.1f tok/s; measured %.1f tok/s "
              "= %.0f%%\n",
              bytes / 1e9, bw / 1e9, roofline, rate, 100.0 * rate / roofline);
}

/// The whole model as llama-bench times it (section 7, the peer comparison
/// of bench/llama-cpp.sh): one sequence on `threads` threads, either a
/// prompt of `promptLen` tokens in one step (the last row's logits, as
/// llama.cpp computes them) or, when gen > 0, `gen` tokens decoded one at a
/// time from position 0 (llama-bench's tg), for `batch` sequences at once
/// (each step decodes one token of each: the rate counts them all). One
/// warm-up, then one timed run; prints "model-rate TOKENS_PER_S" for the
/// script.
int benchModel(const std::string &path, unsigned threads, int64_t promptLen,
               int64_t gen, int64_t batch) {
  // Load time: cold (the artifact's pages dropped from the page cache
  // first, as after a reboot: it is then read from disk as the weights are
  // mapped and touched) and warm (loaded again: the model the run uses).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  auto seconds = [](auto start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start)
        .count();
  };
  auto start = std::chrono::steady_clock::now();
  (void)Model::load(path);
  const double cold = seconds(start);
  start = std::chrono::steady_clock::now();
  auto model = Model::load(path);
  const double warm = seconds(start);
  std::printf("load %s: cold %.3f s (page cache dropped), warm %.3f s\n",
              path.c_str(), cold, warm);
  if (!model.ok()) {
    std::fprintf(stderr, "ds-bench: %s\n",
                 std::string(model.status().message()).c_str());
    return 1;
  }
  auto session = Session::create(*model, gen > 0 ? batch : 1, threads - 1);
  if (!session.ok()) {
    std::fprintf(stderr, "ds-bench: %s\n",
                 std::string(session.status().message()).c_str());
    return 1;
  }
  const int64_t vocab = (*model)->plan().vocabSize;
  const int64_t n = gen > 0 ? gen : promptLen;
  std::vector<int64_t> tokens(n), positions(n);
  for (int64_t i = 0; i < n; ++i) {
    tokens[i] = (i * 7919 + 11) % vocab;
    positions[i] = i;
  }
  absl::Status failed = absl::OkStatus();
  std::vector<int64_t> slots(batch);
  for (int64_t b = 0; b < batch; ++b)
    slots[b] = b;
  auto run = [&] {
    if (gen > 0) {
      for (int64_t i = 0; i < gen && failed.ok(); ++i) {
        std::vector<int64_t> step(batch), at(batch, positions[i]);
        for (int64_t b = 0; b < batch; ++b)
          step[b] = (tokens[i] + b * 131) % vocab;
        failed = (*session)->step(step, at, slots, slots).status();
      }
    } else {
      failed =
          (*session)
              ->step(tokens, positions, std::vector<int64_t>(n, 0), {n - 1})
              .status();
    }
  };
  run();
  start = std::chrono::steady_clock::now();
  run();
  const double s = seconds(start);
  if (!failed.ok()) {
    std::fprintf(stderr, "ds-bench: %s\n",
                 std::string(failed.message()).c_str());
    return 1;
  }
  const double rate = gen > 0 ? static_cast<double>(n * batch) / s : n / s;
  if (gen > 0)
    printDecodeRoofline(**model, batch, rate);
  std::printf("\n== 7. whole model: %s %lld tokens%s, %u thread%s: %.1f "
              "tok/s\n",
              gen > 0 ? "decode" : "prefill", static_cast<long long>(n),
              gen > 0 && batch > 1
                  ? (" x " + std::to_string(batch) + " sequences").c_str()
                  : "",
              threads, threads > 1 ? "s" : "", rate);
  std::printf("model-rate %.3f\n", rate);
  return 0;
}

/// x rounded to bf16, as a bf16 KV cache stores it.
std::vector<uint16_t> toBF16(const std::vector<float> &x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = ::ds::floatToBF16(x[i]);
  return y;
}

/// x as an e4m3 KV cache of `scale` stores it (a power of two).
std::vector<uint8_t> toE4M3(const std::vector<float> &x, float scale) {
  std::vector<uint8_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = ::ds::floatToF8E4M3(x[i] / scale);
  return y;
}

/// Decode attention at a long context, one row, one thread, cold caches:
/// DeepSeek-V3's absorbed MLA and a Llama / Mixtral-style GQA layer, each
/// against its roofline (FLOPs at the FMA peak, bytes at stream bandwidth).
void benchAttention(double bw, double peak) {
  const int64_t len = 4096;
  std::printf("\n== 6. attention: decode at context %lld (1 row), prefill, 1 "
              "thread\n",
              static_cast<long long>(len));
  std::printf("%-40s %10s %12s %10s  %s\n", "", "time ms", "roofline ms",
              "% roof", "bound");
  std::vector<int64_t> slot{0}, pos{len - 1};
  auto report = [&](const char *name, double s, double flops, double bytes) {
    double roof = std::max(flops / peak, bytes / bw);
    std::printf("%-40s %10.3f %12.3f %9.1f%%  %s\n", name, s * 1e3, roof * 1e3,
                100.0 * roof / s,
                flops / peak > bytes / bw ? "compute" : "memory");
  };
  {
    const int64_t H = 128, dn = 128, dr = 64, rank = 512, dv = 128;
    std::vector<float> qn = randomFloats(H * dn, 1),
                       qp = randomFloats(H * dr, 2),
                       ckv = randomFloats(len * rank, 3),
                       kpe = randomFloats(len * dr, 4), out(H * dv);
    std::vector<Packed> uk, uv;
    std::vector<PackedWeight> ukW, uvW;
    uk.reserve(H);
    uv.reserve(H);
    for (int64_t h = 0; h < H; ++h) {
      uk.emplace_back(randomFloats(rank * dn, 10 + h, 0.05f), rank, dn);
      uv.emplace_back(randomFloats(dv * rank, 500 + h, 0.05f), dv, rank);
      ukW.push_back(uk.back().w);
      uvW.push_back(uv.back().w);
    }
    double s = medianSeconds([&] {
      mlaAttentionPacked(qn.data(), qp.data(), 1, 1, H, dn, dr, ckv.data(),
                         kpe.data(), len, rank, ukW.data(), uvW.data(), dv,
                         slot.data(), pos.data(), 0.07, out.data(), nullptr);
    });
    double flops = 2.0 * H * (len * (2.0 * rank + dr) + rank * (dn + dv));
    double bytes = 4.0 * (len * (rank + dr) + H * rank * (dn + dv));
    report("MLA, DeepSeek-V3 (128 heads, rank 512)", s, flops, bytes);
    // Its two phases: the absorbed projections (one GEMV per head for
    // W_uk and W_uv: memory-bound, 67 MB of f32 weights) and the latent
    // attention between them (compute-bound). One after the other on one
    // core, so the time's bound is the sum of theirs, not the larger.
    std::vector<float> qAbs(H * rank), oLat(H * rank, 0.01f);
    double proj = medianSeconds([&] {
      for (int64_t h = 0; h < H; ++h)
        gemm(qn.data() + h * dn, 1, H * dn, ukW[h], nullptr,
             qAbs.data() + h * rank, H * rank);
      for (int64_t h = 0; h < H; ++h)
        gemm(oLat.data() + h * rank, 1, H * rank, uvW[h], nullptr,
             out.data() + h * dv, H * dv);
    });
    const double projFlops = 2.0 * H * rank * (dn + dv),
                 projBytes = 4.0 * H * rank * (dn + dv);
    report("  projections (W_uk, W_uv GEMVs)", proj, projFlops, projBytes);
    report("  latent attention (the rest)", s - proj, flops - projFlops,
           bytes - projBytes);
    const double sumRoof =
        std::max(projFlops / peak, projBytes / bw) +
        std::max((flops - projFlops) / peak, (bytes - projBytes) / bw);
    std::printf("%-40s %10.3f %12.3f %9.1f%%  %s\n",
                "  whole, phases in sequence", s * 1e3, sumRoof * 1e3,
                100.0 * sumRoof / s, "sum of both");
    // The same over a bf16 latent cache (ds-kv-cache-type): half the bytes.
    std::vector<uint16_t> ckv16 = toBF16(ckv), kpe16 = toBF16(kpe);
    double s16 = medianSeconds([&] {
      mlaAttentionPacked(qn.data(), qp.data(), 1, 1, H, dn, dr, ckv16.data(),
                         kpe16.data(), KVType::BF16, len, rank, ukW.data(),
                         uvW.data(), dv, slot.data(), pos.data(), 0.07,
                         out.data(), nullptr);
    });
    report("MLA, bf16 latent cache", s16, flops,
           2.0 * len * (rank + dr) + 4.0 * H * rank * (dn + dv));
    std::printf("%-40s %10.2fx\n", "  bf16 cache / f32 cache speed", s / s16);
    // And over an e4m3 latent cache: a quarter of the f32 bytes.
    std::vector<uint8_t> ckv8 = toE4M3(ckv, 1.0f / 64),
                         kpe8 = toE4M3(kpe, 1.0f / 64);
    double s8 = medianSeconds([&] {
      mlaAttentionPacked(qn.data(), qp.data(), 1, 1, H, dn, dr, ckv8.data(),
                         kpe8.data(), KVType::F8E4M3, len, rank, ukW.data(),
                         uvW.data(), dv, slot.data(), pos.data(), 0.07,
                         out.data(), nullptr, nullptr, nullptr, 1.0f / 64,
                         1.0f / 64);
    });
    report("MLA, fp8 e4m3 latent cache", s8, flops,
           1.0 * len * (rank + dr) + 4.0 * H * rank * (dn + dv));
    std::printf("%-40s %10.2fx\n", "  fp8 cache / f32 cache speed", s / s8);
  }
  {
    const int64_t H = 32, kvH = 8, d = 128;
    std::vector<float> q = randomFloats(H * d, 5),
                       k = randomFloats(len * kvH * d, 6),
                       v = randomFloats(len * kvH * d, 7), out(H * d);
    double s = medianSeconds([&] {
      attention(q.data(), 1, 1, H, d, k.data(), v.data(), len, kvH, d,
                slot.data(), pos.data(), 0, 0.088, out.data(), nullptr);
    });
    double flops = 4.0 * H * len * d;
    double bytes = 2.0 * 4.0 * len * kvH * d;
    report("GQA (32 query / 8 KV heads, d 128)", s, flops, bytes);
    std::vector<uint16_t> k16 = toBF16(k), v16 = toBF16(v);
    double s16 = medianSeconds([&] {
      attention(q.data(), 1, 1, H, d, k16.data(), v16.data(), KVType::BF16, len,
                kvH, d, slot.data(), pos.data(), 0, 0.088, out.data(), nullptr);
    });
    report("GQA, bf16 KV cache", s16, flops, bytes / 2);
    std::printf("%-40s %10.2fx\n", "  bf16 cache / f32 cache speed", s / s16);
    std::vector<uint8_t> k8 = toE4M3(k, 1.0f / 64), v8 = toE4M3(v, 1.0f / 64);
    double s8 = medianSeconds([&] {
      attention(q.data(), 1, 1, H, d, k8.data(), v8.data(), KVType::F8E4M3, len,
                kvH, d, slot.data(), pos.data(), 0, 0.088, out.data(), nullptr,
                1.0f / 64, 1.0f / 64);
    });
    report("GQA, fp8 e4m3 KV cache", s8, flops, bytes / 4);
    std::printf("%-40s %10.2fx\n", "  fp8 cache / f32 cache speed", s / s8);
    // Prefill of one sequence of 1024 tokens (causal), as a prefill step
    // calls it (batch 1, seq 1024): rows at consecutive positions share the
    // key rows they read.
    const int64_t n = 1024;
    std::vector<float> pq = randomFloats(n * H * d, 8), pout(n * H * d);
    std::vector<int64_t> positions(n);
    for (int64_t i = 0; i < n; ++i)
      positions[i] = i;
    double p = medianSeconds(
        [&] {
          attention(pq.data(), 1, n, H, d, k.data(), v.data(), len, kvH, d,
                    slot.data(), positions.data(), 0, 0.088, pout.data(),
                    nullptr);
        },
        std::max(3, reps / 3));
    report("GQA prefill, 1024 tokens", p, 4.0 * H * d * n * (n + 1) / 2.0,
           2.0 * 4.0 * n * kvH * d);
  }
}

void benchJit(const std::string &path, const std::string &optimize) {
  std::printf("\n== 5. JIT: ds_model_compile(%s, \"%s\")\n", path.c_str(),
              optimize.c_str());
  // A fresh cache directory: the first call compiles, the next ones load.
  std::string dir =
      (std::filesystem::temp_directory_path() / "ds-bench-cache-XXXXXX")
          .string();
  if (!mkdtemp(dir.data())) {
    std::printf("cannot create a cache directory\n");
    return;
  }
  setenv("DS_CACHE_DIR", dir.c_str(), 1);
  auto compile = [&]() -> double {
    auto a = std::chrono::steady_clock::now();
    ds_model *m = nullptr;
    if (ds_model_compile(path.c_str(), optimize.c_str(), &m) != DS_OK) {
      std::printf("ds_model_compile failed: %s\n", ds_last_error());
      return -1;
    }
    double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - a)
            .count();
    ds_model_release(m);
    return s;
  };
  double first = compile();
  if (first >= 0) {
    std::vector<double> warm;
    for (int i = 0; i < reps; ++i)
      warm.push_back(compile());
    std::sort(warm.begin(), warm.end());
    std::printf("first JIT (empty cache): %.0f ms (target < 5 s); warm "
                "start (cache hit, median of %d): %.1f ms (target < 100 ms)\n",
                first * 1e3, reps, warm[warm.size() / 2] * 1e3);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

} // namespace

int main(int argc, char **argv) {
  // oneDNN runs on OpenMP, which reads OMP_NUM_THREADS when the library
  // loads, before main: setting it here is too late, so run again with it
  // set (otherwise the one-thread baseline uses every core).
  if (const char *v = std::getenv("OMP_NUM_THREADS");
      !v || std::string(v) != "1") {
    setenv("OMP_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
    std::fprintf(stderr, "ds-bench: could not restart with OMP_NUM_THREADS=1; "
                         "oneDNN may use several threads\n");
  }
  std::string model, only, jit, jitOptimize = "quantize=int8";
  unsigned threads = 1;
  int64_t promptLen = 128, gen = 0, batch = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--model" && i + 1 < argc)
      model = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--only" && i + 1 < argc)
      only = argv[++i];
    else if (a == "--jit" && i + 1 < argc)
      jit = argv[++i];
    else if (a == "--jit-optimize" && i + 1 < argc)
      jitOptimize = argv[++i];
    else if (a == "--torch" && i + 1 < argc)
      torchScript = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      threads = static_cast<unsigned>(std::max(1, std::atoi(argv[++i])));
    else if (a == "--prompt-len" && i + 1 < argc)
      promptLen = std::max(1, std::atoi(argv[++i]));
    else if (a == "--gen" && i + 1 < argc)
      gen = std::max(0, std::atoi(argv[++i]));
    else if (a == "--batch" && i + 1 < argc)
      batch = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: ds-bench [--model M.dsa] [--jit DIR|M.mlir "
                           "[--jit-optimize OPTS]] [--torch "
                           "bench/moe-torch.sh] [--reps N] [--only "
                           "moe|gemm|int8|batch|attention|jit|model] "
                           "[--threads T --prompt-len P --gen G --batch B "
                           "(model)]\n");
      return 2;
    }
  }
  if (only == "model") {
    if (model.empty()) {
      std::fprintf(stderr, "ds-bench: --only model needs --model M.dsa\n");
      return 2;
    }
    return benchModel(model, threads, promptLen, gen, batch);
  }
  const CpuInfo &cpu = cpuInfo();
  std::printf("ds-bench on %s (%s; L1d %lld KiB, L2 %lld KiB, %u cores): %s "
              "kernels%s, medians of %d runs\n",
              cpu.model.c_str(), cpu.isaSummary().c_str(),
              static_cast<long long>(cpu.l1d >> 10),
              static_cast<long long>(cpu.l2 >> 10),
              std::max(1u, std::thread::hardware_concurrency()),
              hasAvx512() ? "AVX-512" : "AVX2",
              amxMode() == AmxMode::Hardware   ? " + AMX tiles (bf16, W8A8)"
              : amxMode() == AmxMode::Emulated ? " + EMULATED AMX tiles"
                                               : "",
              reps);
  double bw = 0, peak = 0;
  if (only.empty() || only == "moe" || only == "gemm" || only == "int8" ||
      only == "attention") {
    bw = streamBandwidth();
    peak = fmaPeak();
    std::printf("measured here: stream read %.1f GB/s, FMA peak %.1f GFLOP/s "
                "(one core)\n",
                bw / 1e9, peak / 1e9);
    if (double bf = dpbf16Peak(); bf > 0)
      std::printf("vdpbf16ps (AVX512_BF16) peak %.1f GFLOP/s = %.2fx the f32 "
                  "FMA peak: bf16 dot products %s\n",
                  bf / 1e9, bf / peak,
                  bf > 1.2 * peak ? "can beat f32 at prefill sizes"
                                  : "cannot beat f32 FMAs on this core");
  }
  if (only.empty() || only == "moe" || only == "int8")
    benchMoE(bw, peak, only.empty() || only == "int8");
  if (only.empty() || only == "gemm")
    benchGemm(bw);
  if (!model.empty() && (only.empty() || only == "batch"))
    benchBatching(model);
  if (!jit.empty() && (only.empty() || only == "jit"))
    benchJit(jit, jitOptimize);
  if (only.empty() || only == "attention")
    benchAttention(bw, peak);
  return 0;
}
