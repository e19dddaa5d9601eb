//===- ThreadScratchTest.cpp - kernels' per-thread scratch
//-----------------===//
//
// Scopes and bindings, parallelFor's slots, and every kernel that takes
// scratch run inside a region of exactly the size its *Scratch function
// gives: nothing may spill past it (a planning bug the executor would hide
// by serving the take from the heap), and one cache line less must spill
// where the kernel reaches its bound, so that the sizes cannot drift above
// what the kernels take unseen either.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/ThreadScratch.h"
#include "ds/rt/Kernels.h"
#include "ds/rt/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace ds::rt;
using namespace ds::rt::kernels;

namespace {

/// 64-byte aligned storage.
struct Aligned {
  std::vector<uint8_t> storage;
  uint8_t *data;
  explicit Aligned(uint64_t bytes) : storage(bytes + 64) {
    auto p = reinterpret_cast<uintptr_t>(storage.data());
    data = reinterpret_cast<uint8_t *>((p + 63) & ~uintptr_t{63});
  }
};

/// Runs fn bound to a region of exactly `need` for `workers` workers;
/// returns how many takes spilled out of it.
uint64_t spillsWithin(const ThreadScratchNeed &need, unsigned workers,
                      const std::function<void()> &fn) {
  Aligned region(WorkerScratch::bytes(need, workers));
  uint64_t before = ThreadScratch::overflows();
  {
    ThreadScratch::Binding bind(
        WorkerScratch::carve(region.data, need, workers), 0);
    fn();
  }
  return ThreadScratch::overflows() - before;
}

/// The kernel within its region, alone and over `pool`; and with one
/// cache line less on the calling thread when `tight` (the kernel reaches
/// its bound on that thread alone).
void expectFits(const char *what, const ThreadScratchNeed &need,
                ThreadPool &pool, bool tight,
                const std::function<void(ThreadPool *)> &kernel) {
  SCOPED_TRACE(what);
  EXPECT_EQ(spillsWithin(need, 0, [&] { kernel(nullptr); }), 0u);
  EXPECT_EQ(spillsWithin(need, pool.numWorkers(), [&] { kernel(&pool); }), 0u);
  if (tight) {
    ASSERT_GE(need.caller, kScratchAlign);
    ThreadScratchNeed less = need;
    less.caller -= kScratchAlign;
    EXPECT_GT(spillsWithin(less, 0, [&] { kernel(nullptr); }), 0u);
  }
}

std::vector<float> uniform(int64_t n, std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1, 1);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

} // namespace

TEST(ThreadScratch, ScopesReleaseInOrderAndAlign) {
  ThreadScratch::Scope outer;
  auto *a = static_cast<uint8_t *>(outer.bytes(100));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % kScratchAlign, 0u);
  uint8_t *b;
  {
    ThreadScratch::Scope inner;
    b = static_cast<uint8_t *>(inner.bytes(10));
    EXPECT_EQ(b, a + 128); // 100 rounded up to two lines
  }
  EXPECT_EQ(outer.bytes(1), b); // the inner scope's bytes came back

  // Bound: two takes fill 256 bytes; a third spills (counted) to the heap.
  ThreadScratchNeed need{256, 0};
  Aligned region(WorkerScratch::bytes(need, 0));
  uint64_t before = ThreadScratch::overflows();
  {
    ThreadScratch::Binding bind(WorkerScratch::carve(region.data, need, 0), 0);
    ThreadScratch::Scope scope;
    EXPECT_EQ(scope.bytes(100), region.data);
    EXPECT_EQ(scope.bytes(128), region.data + 128);
    EXPECT_EQ(ThreadScratch::overflows(), before);
    void *spilled = scope.bytes(1);
    EXPECT_TRUE(spilled < region.data || spilled >= region.data + 256);
    EXPECT_EQ(ThreadScratch::overflows(), before + 1);
  }
  // Unbound again: the heap, not counted.
  ThreadScratch::Scope after;
  after.bytes(1 << 20);
  EXPECT_EQ(ThreadScratch::overflows(), before + 1);
}

TEST(ThreadScratch, ParallelForGivesEachThreadItsOwnSlot) {
  ThreadPool pool(3);
  const uint64_t slot = 4096;
  ThreadScratchNeed need{slot, slot};
  Aligned region(WorkerScratch::bytes(need, pool.numWorkers()));
  uint8_t *lo = region.data,
          *hi = region.data + WorkerScratch::bytes(need, pool.numWorkers());
  std::mutex mutex;
  std::map<std::thread::id, std::set<uint8_t *>> taken;
  std::atomic<int> bad{0};
  uint64_t before = ThreadScratch::overflows();
  {
    ThreadScratch::Binding bind(
        WorkerScratch::carve(region.data, need, pool.numWorkers()), 0);
    pool.parallelFor(256, 1, [&](int64_t begin, int64_t end) {
      ThreadScratch::Scope scope;
      auto *p = static_cast<uint8_t *>(scope.bytes(slot));
      {
        std::lock_guard<std::mutex> lock(mutex);
        taken[std::this_thread::get_id()].insert(p);
      }
      // Whatever another thread writes meanwhile must not land here.
      std::memset(p, static_cast<int>(begin & 0xff), slot);
      for (int spin = 0; spin < 2000; ++spin)
        std::this_thread::yield();
      for (uint64_t i = 0; i < slot; ++i)
        bad += p[i] != static_cast<uint8_t>(begin & 0xff);
      (void)end;
    });
  }
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(ThreadScratch::overflows(), before);
  std::set<uint8_t *> slots;
  for (const auto &[thread, ptrs] : taken) {
    EXPECT_EQ(ptrs.size(), 1u) << "a thread moved between slots";
    for (uint8_t *p : ptrs) {
      EXPECT_TRUE(p >= lo && p + slot <= hi);
      slots.insert(p);
    }
  }
  EXPECT_EQ(slots.size(), taken.size()) << "two threads shared a slot";
}

/// Sets the AMX tile kernels' mode back when the test ends.
struct RestoreAmx {
  AmxMode mode;
  ~RestoreAmx() { setAmxMode(mode); }
};

TEST(ThreadScratch, GemmTakesWhatGemmScratchSays) {
  ThreadPool pool(2);
  std::mt19937 rng(5);
  // The AMX tile kernels (emulated where the CPU lacks them) take their
  // own scratch.
  const AmxMode before = amxMode();
  const RestoreAmx restore{before};
  for (AmxMode amx : {before, AmxMode::Emulated})
    for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16,
                                WeightFormat::I8Dot, WeightFormat::I4Dot})
      for (Round inputs : {Round::None, Round::BF16})
        for (int64_t m : {1, 3, 7, 30, 100})
          for (int64_t k : {64, 700}) {
            const int64_t n = 96;
            // W4A8: groups of 8 (the most groups gemmScratch allows for),
            // which must divide K.
            if (format == WeightFormat::I4Dot && k % 8 != 0)
              continue;
            const int64_t group = format == WeightFormat::I4Dot ? 8 : 0;
            std::vector<float> a = uniform(m * k, rng), w = uniform(n * k, rng);
            Aligned packed(packedWeightBytes(format, n, k, group));
            if (format == WeightFormat::F32)
              packWeightF32(w.data(), n, k, packed.data);
            else if (format == WeightFormat::BF16)
              packWeightBF16(w.data(), n, k, packed.data);
            else if (format == WeightFormat::I4Dot) {
              std::vector<float> q(n * k), scales(n * (k / group), 0.01f);
              for (int64_t i = 0; i < n * k; ++i)
                q[i] = std::round(w[i] * 7);
              packWeightI4Dot(q.data(), scales.data(), n, k, group,
                              packed.data);
            } else {
              std::vector<int8_t> q(n * k);
              for (int64_t i = 0; i < n * k; ++i)
                q[i] = static_cast<int8_t>(w[i] * 100);
              std::vector<float> scales(n, 0.01f);
              packWeightI8Dot(q.data(), scales.data(), n, k, packed.data);
            }
            PackedWeight pw{format, n, k, packed.data, group};
            std::vector<float> c(m * n);
            setAmxMode(amx);
            ThreadScratchNeed need = gemmScratch(m, k, format, inputs);
            std::string what =
                "amx " + std::to_string(static_cast<int>(amx)) + " format " +
                std::to_string(static_cast<int>(format)) + " inputs " +
                std::to_string(static_cast<int>(inputs)) + " m " +
                std::to_string(m) + " k " + std::to_string(k);
            expectFits(
                what.c_str(), need, pool, need.caller > 0, [&](ThreadPool *p) {
                  gemm(a.data(), m, k, pw, nullptr, c.data(), n, p, inputs);
                });
            setAmxMode(before);
          }
}

TEST(ThreadScratch, GemmScratchUpToCoversEveryRowCount) {
  // Fewer rows can pick a tile with a wider slab than more rows do; an
  // expert's row count is only known to be at most the token count.
  const AmxMode before = amxMode();
  const RestoreAmx restore{before};
  for (AmxMode amx : {before, AmxMode::Emulated})
    for (WeightFormat format :
         {WeightFormat::F32, WeightFormat::I8, WeightFormat::BF16,
          WeightFormat::I8Dot, WeightFormat::I4Dot})
      for (int64_t k : {64, 700})
        for (int64_t m = 1; m <= 64; ++m) {
          setAmxMode(amx);
          for (Round inputs : {Round::None, Round::BF16}) {
            ThreadScratchNeed upTo = gemmScratchUpTo(m, k, format, inputs);
            for (int64_t r = 1; r <= m; ++r) {
              ThreadScratchNeed g = gemmScratch(r, k, format, inputs);
              ASSERT_LE(g.caller, upTo.caller) << m << " " << r << " " << k;
              ASSERT_LE(g.worker, upTo.worker) << m << " " << r << " " << k;
            }
          }
        }
}

TEST(ThreadScratch, MoeExpertsFitWithSkewedRouting) {
  // 40 tokens over 4 experts, top-2, routed so that experts get 40, 20, 16
  // and 4 rows: every tile choice of the expert GEMMs runs. Planned as the
  // executor plans an MoE step: each thread may run any whole expert GEMM
  // or its share of a split one.
  ThreadPool pool(2);
  std::mt19937 rng(9);
  const int64_t n = 40, h = 64, inter = 48, experts = 4, topK = 2;
  std::vector<int32_t> indices(n * topK);
  for (int64_t t = 0; t < n; ++t) {
    indices[t * topK] = 0;
    indices[t * topK + 1] = t < 20 ? 1 : t < 36 ? 2 : 3;
  }
  std::vector<float> x = uniform(n * h, rng), weights(n * topK, 0.5f), y(n * h);
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::I8}) {
    std::vector<Aligned> storage;
    std::vector<PackedWeight> gateUp, down;
    auto pack = [&](int64_t rows, int64_t k) {
      storage.emplace_back(packedWeightBytes(format, rows, k));
      std::vector<float> w = uniform(rows * k, rng);
      if (format == WeightFormat::F32) {
        packWeightF32(w.data(), rows, k, storage.back().data);
      } else {
        std::vector<int8_t> q(rows * k);
        for (int64_t i = 0; i < rows * k; ++i)
          q[i] = static_cast<int8_t>(w[i] * 100);
        std::vector<float> scales(rows, 0.01f);
        packWeightI8(q.data(), scales.data(), rows, k, storage.back().data);
      }
      return PackedWeight{format, rows, k, storage.back().data};
    };
    storage.reserve(2 * experts);
    for (int64_t e = 0; e < experts; ++e) {
      gateUp.push_back(pack(2 * inter, h));
      down.push_back(pack(h, inter));
    }
    ThreadScratchNeed need;
    for (int64_t k : {h, inter}) {
      ThreadScratchNeed g = gemmScratchUpTo(n, k, format);
      need.atLeast(ThreadScratchNeed::everywhere(std::max(g.caller, g.worker)));
    }
    Aligned kernelScratch(moeExpertsScratchBytes(n, h, topK, experts, inter));
    for (ThreadPool *p : {static_cast<ThreadPool *>(nullptr), &pool})
      EXPECT_EQ(spillsWithin(need, pool.numWorkers(),
                             [&] {
                               EXPECT_EQ(
                                   moeExperts(x.data(), n, h, weights.data(),
                                              indices.data(), topK, experts,
                                              gateUp.data(), down.data(), inter,
                                              Act::Silu, y.data(), p, {},
                                              Round::None, kernelScratch.data),
                                   -1);
                             }),
                0u)
          << "format " << static_cast<int>(format) << (p ? " pooled" : "");
  }
}

TEST(ThreadScratch, RouteAndRopeTakeWhatTheySay) {
  ThreadPool pool(2);
  std::mt19937 rng(6);
  RouterConfig rc;
  rc.numExperts = 64;
  rc.topK = 6;
  rc.nGroup = 8;
  rc.topkGroup = 3;
  const int64_t tokens = 5;
  std::vector<float> logits = uniform(tokens * rc.numExperts, rng),
                     weights(tokens * rc.topK);
  std::vector<int32_t> indices(tokens * rc.topK);
  expectFits("route", {routeScratchBytes(rc), 0}, pool, true,
             [&](ThreadPool *) {
               route(logits.data(), nullptr, tokens, rc, weights.data(),
                     indices.data());
             });
  const int64_t heads = 4, dFull = 64, dim = 48;
  std::vector<float> x = uniform(tokens * heads * dFull, rng),
                     invFreq(dim / 2, 0.01f);
  std::vector<int64_t> positions{0, 1, 2, 3, 4};
  for (int32_t style : {0, 1, 2})
    expectFits("rope", {ropeScratchBytes(dim), 0}, pool, true,
               [&](ThreadPool *) {
                 rope(x.data(), tokens, heads, dFull, dim, invFreq.data(), 1.0f,
                      style, positions.data());
               });
}

TEST(ThreadScratch, AttentionTakesWhatAttentionScratchSays) {
  ThreadPool pool(2);
  std::mt19937 rng(7);
  struct Case {
    int64_t seq;
    std::vector<int64_t> slots;
    bool tight; // an 8-row run (or a row alone) ends at the cache's end
  };
  const std::vector<Case> cases{
      {8, {0, 1}, true}, {1, {0, 0}, true}, {5, {0, 1}, false}};
  for (KVType type : {KVType::F32, KVType::BF16})
    for (const Case &c : cases) {
      const int64_t batch = 2, seq = c.seq, heads = 8, kvHeads = 2, d = 64,
                    dv = 48, maxLen = 40;
      std::vector<float> q = uniform(batch * seq * heads * d, rng),
                         out(batch * seq * heads * dv);
      const int64_t elem = type == KVType::F32 ? 4 : 2;
      std::vector<uint8_t> k(batch * maxLen * kvHeads * d * elem, 0x3c),
          v(batch * maxLen * kvHeads * dv * elem, 0x3c);
      // Rows of one slot at consecutive positions up to the cache's end.
      std::vector<int64_t> positions(batch * seq);
      for (int64_t r = 0; r < batch * seq; ++r)
        positions[r] = c.slots[0] == c.slots[1] ? maxLen - batch * seq + r
                                                : maxLen - seq + r % seq;
      ThreadScratchNeed need =
          attentionScratch(batch, seq, heads, d, type, maxLen, kvHeads, dv, 0);
      std::string what = "seq " + std::to_string(seq) + " type " +
                         std::to_string(static_cast<int>(type));
      expectFits(what.c_str(), need, pool, c.tight, [&](ThreadPool *p) {
        attention(q.data(), batch, seq, heads, d, k.data(), v.data(), type,
                  maxLen, kvHeads, dv, c.slots.data(), positions.data(), 0, 0.1,
                  out.data(), p);
      });
    }
}

TEST(ThreadScratch, MlaTakesWhatMlaAttentionScratchSays) {
  ThreadPool pool(2);
  std::mt19937 rng(8);
  const int64_t batch = 2, seq = 3, heads = 4, dn = 32, dr = 16, rank = 64,
                dv = 32, maxLen = 30;
  std::vector<std::vector<float>> storage;
  std::vector<Aligned> packs;
  packs.reserve(2 * heads);
  std::vector<PackedWeight> ukT, uv;
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<float> a = uniform(rank * dn, rng), b = uniform(dv * rank, rng);
    packs.emplace_back(packedWeightBytes(WeightFormat::F32, rank, dn));
    packWeightF32(a.data(), rank, dn, packs.back().data);
    ukT.push_back({WeightFormat::F32, rank, dn, packs.back().data});
    packs.emplace_back(packedWeightBytes(WeightFormat::F32, dv, rank));
    packWeightF32(b.data(), dv, rank, packs.back().data);
    uv.push_back({WeightFormat::F32, dv, rank, packs.back().data});
  }
  std::vector<float> qn = uniform(batch * seq * heads * dn, rng),
                     qp = uniform(batch * seq * heads * dr, rng),
                     out(batch * seq * heads * dv),
                     scratch(
                         mlaScratchFloats(batch * seq, heads, rank, dn, false));
  std::vector<int64_t> slots{0, 1}, positions(batch * seq);
  for (int64_t i = 0; i < batch * seq; ++i)
    positions[i] = maxLen - seq + i % seq;
  for (KVType type : {KVType::F32, KVType::BF16}) {
    const int64_t elem = type == KVType::F32 ? 4 : 2;
    std::vector<uint8_t> ckv(batch * maxLen * rank * elem, 0x3c),
        kpe(batch * maxLen * dr * elem, 0x3c);
    ThreadScratchNeed need =
        mlaAttentionScratch(batch, seq, heads, dn, dr, type, maxLen, rank,
                            WeightFormat::F32, WeightFormat::F32);
    expectFits("mla", need, pool, false, [&](ThreadPool *p) {
      mlaAttentionPacked(qn.data(), qp.data(), batch, seq, heads, dn, dr,
                         ckv.data(), kpe.data(), type, maxLen, rank, ukT.data(),
                         uv.data(), dv, slots.data(), positions.data(), 0.1,
                         out.data(), p, nullptr, scratch.data());
    });
  }
}
