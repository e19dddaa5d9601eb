//===- MemoryPlanner.cpp - liveness-based buffer placement
//-----------------===//

#include "ds/rt/MemoryPlanner.h"
#include "ds/rt/Status.h"

#include "absl/strings/str_cat.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

namespace ds::rt {

namespace {

bool isPowerOfTwo(uint64_t v) { return v && !(v & (v - 1)); }

bool liveTogether(const BufferRequest &a, const BufferRequest &b) {
  return a.firstUse <= b.lastUse && b.firstUse <= a.lastUse;
}

uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

constexpr uint64_t kMaxBuffer = uint64_t(1) << 50; // 1 PiB: no overflow below

} // namespace

absl::StatusOr<MemoryPlan>
planMemory(const std::vector<BufferRequest> &requests) {
  for (size_t i = 0; i < requests.size(); ++i) {
    const BufferRequest &r = requests[i];
    if (!isPowerOfTwo(r.alignment) || r.alignment > (uint64_t(1) << 30))
      return absl::InvalidArgumentError(
          absl::StrCat("buffer ", i, ": alignment ", r.alignment,
                       " is not a power of two up to 1 GiB"));
    if (r.lastUse < r.firstUse)
      return absl::InvalidArgumentError(
          absl::StrCat("buffer ", i, ": last use ", r.lastUse,
                       " before first use ", r.firstUse));
    if (r.size > kMaxBuffer)
      return absl::InvalidArgumentError(
          absl::StrCat("buffer ", i, ": size ", r.size, " is too large"));
  }
  MemoryPlan plan;
  plan.offsets.assign(requests.size(), 0);
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  // Largest first; ties by earlier first use, then index (deterministic).
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (requests[a].size != requests[b].size)
      return requests[a].size > requests[b].size;
    if (requests[a].firstUse != requests[b].firstUse)
      return requests[a].firstUse < requests[b].firstUse;
    return a < b;
  });
  std::vector<size_t> placed;
  for (size_t i : order) {
    const BufferRequest &r = requests[i];
    plan.totalSize += r.size;
    if (r.size == 0) {
      plan.offsets[i] = 0;
      continue;
    }
    // Occupied intervals of the placed buffers live together with this one,
    // by offset.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (size_t j : placed)
      if (requests[j].size && liveTogether(r, requests[j]))
        busy.push_back({plan.offsets[j], plan.offsets[j] + requests[j].size});
    std::sort(busy.begin(), busy.end());
    uint64_t offset = 0;
    for (auto [begin, end] : busy) {
      if (alignUp(offset, r.alignment) + r.size <= begin)
        break;
      offset = std::max(offset, end);
    }
    offset = alignUp(offset, r.alignment);
    plan.offsets[i] = offset;
    plan.arenaSize = std::max(plan.arenaSize, offset + r.size);
    placed.push_back(i);
  }
  return plan;
}

bool isValidPlan(const std::vector<BufferRequest> &requests,
                 const MemoryPlan &plan) {
  if (plan.offsets.size() != requests.size())
    return false;
  for (size_t i = 0; i < requests.size(); ++i) {
    const BufferRequest &a = requests[i];
    if (plan.offsets[i] % a.alignment ||
        plan.offsets[i] + a.size > plan.arenaSize)
      return false;
    for (size_t j = i + 1; j < requests.size(); ++j) {
      const BufferRequest &b = requests[j];
      if (!a.size || !b.size || !liveTogether(a, b))
        continue;
      uint64_t ai = plan.offsets[i], bj = plan.offsets[j];
      if (ai < bj + b.size && bj < ai + a.size)
        return false;
    }
  }
  return true;
}

absl::StatusOr<Arena> Arena::create(uint64_t size) {
  constexpr uint64_t kHuge = uint64_t(2) << 20;
  Arena arena;
  if (size == 0)
    return arena;
  if (size > kMaxBuffer)
    return outOfMemoryError(
        absl::StrCat("arena of ", size, " bytes is too large"));
  uint64_t length = alignUp(size, kHuge);
  // Over-map by one huge page to align the start to 2 MiB, then trim.
  uint64_t mapped = length + kHuge;
  void *p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return outOfMemoryError(absl::StrCat("cannot map an arena of ", length,
                                         " bytes: ", std::strerror(errno)));
  auto start = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = alignUp(start, kHuge);
  if (aligned > start)
    munmap(p, aligned - start);
  uintptr_t end = aligned + length, mappedEnd = start + mapped;
  if (mappedEnd > end)
    munmap(reinterpret_cast<void *>(end), mappedEnd - end);
  arena.base = reinterpret_cast<uint8_t *>(aligned);
  arena.length = length;
#ifdef MADV_HUGEPAGE
  // Advice only: without transparent huge pages this is a no-op.
  (void)madvise(arena.base, length, MADV_HUGEPAGE);
#endif
  // Fault every page in now, not during the first request.
  for (uint64_t off = 0; off < length; off += 4096)
    arena.base[off] = 0;
  return arena;
}

Arena::Arena(Arena &&other) noexcept : base(other.base), length(other.length) {
  other.base = nullptr;
  other.length = 0;
}

Arena &Arena::operator=(Arena &&other) noexcept {
  if (this != &other) {
    if (base)
      munmap(base, length);
    base = other.base;
    length = other.length;
    other.base = nullptr;
    other.length = 0;
  }
  return *this;
}

Arena::~Arena() {
  if (base)
    munmap(base, length);
}

} // namespace ds::rt
