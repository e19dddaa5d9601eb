//===- ThreadScratch.cpp - kernels' per-thread scratch, from the plan -----===//

#include "ds/rt/ThreadScratch.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

namespace ds::rt {
namespace {

/// Heap memory of an unbound thread (or of an overflow): chunks that are
/// never moved (earlier takes stay valid) and kept for the next calls.
struct Chunk {
  std::unique_ptr<uint8_t[]> memory;
  uint8_t *data;
  uint64_t size;
};

struct State {
  // The bound slot, if `bound`.
  WorkerScratch region;
  uint8_t *base = nullptr;
  uint64_t size = 0, used = 0;
  bool bound = false;
  // The heap stack: chunks[chunk] is being filled, `chunkUsed` bytes so far.
  std::vector<Chunk> chunks;
  size_t chunk = 0;
  uint64_t chunkUsed = 0;
};

thread_local State state;
std::atomic<uint64_t> overflowCount{0};

void *fromHeap(State &s, uint64_t bytes) {
  for (; s.chunk < s.chunks.size(); ++s.chunk, s.chunkUsed = 0)
    if (s.chunkUsed + bytes <= s.chunks[s.chunk].size) {
      void *p = s.chunks[s.chunk].data + s.chunkUsed;
      s.chunkUsed += bytes;
      return p;
    }
  uint64_t size = std::max<uint64_t>(bytes, uint64_t{1} << 20);
  if (!s.chunks.empty())
    size = std::max(size, 2 * s.chunks.back().size);
  Chunk c;
  c.memory.reset(new uint8_t[size + kScratchAlign]);
  auto at = reinterpret_cast<uintptr_t>(c.memory.get());
  c.data = reinterpret_cast<uint8_t *>((at + kScratchAlign - 1) &
                                       ~uintptr_t{kScratchAlign - 1});
  c.size = size;
  s.chunks.push_back(std::move(c));
  s.chunk = s.chunks.size() - 1;
  s.chunkUsed = bytes;
  return s.chunks.back().data;
}

} // namespace

ThreadScratch::Scope::Scope()
    : regionMark(state.used), chunkMark(state.chunk),
      chunkUsedMark(state.chunkUsed) {}

ThreadScratch::Scope::~Scope() {
  State &s = state;
  s.used = regionMark;
  s.chunk = chunkMark;
  s.chunkUsed = chunkUsedMark;
}

void *ThreadScratch::Scope::bytes(uint64_t bytes) {
  State &s = state;
  bytes = scratchRound(bytes);
  if (s.bound) {
    if (s.used + bytes <= s.size) {
      void *p = s.base + s.used;
      s.used += bytes;
      return p;
    }
    overflowCount.fetch_add(1, std::memory_order_relaxed);
  }
  return fromHeap(s, bytes);
}

ThreadScratch::Binding::Binding(const WorkerScratch &region, unsigned slot) {
  State &s = state;
  saved = {s.region, s.base, s.size, s.used, s.bound};
  s.region = region;
  s.bound = true;
  s.used = 0;
  if (slot == 0) {
    s.base = region.base;
    s.size = region.callerBytes;
  } else if (slot <= region.workers) {
    s.base = region.base + region.callerBytes +
             static_cast<uint64_t>(slot - 1) * region.workerBytes;
    s.size = region.workerBytes;
  } else {
    s.base = nullptr;
    s.size = 0;
  }
}

ThreadScratch::Binding::~Binding() {
  State &s = state;
  s.region = saved.region;
  s.base = saved.base;
  s.size = saved.size;
  s.used = saved.used;
  s.bound = saved.bound;
}

bool ThreadScratch::currentRegion(WorkerScratch *region) {
  if (!state.bound)
    return false;
  *region = state.region;
  return true;
}

uint64_t ThreadScratch::overflows() {
  return overflowCount.load(std::memory_order_relaxed);
}

} // namespace ds::rt
