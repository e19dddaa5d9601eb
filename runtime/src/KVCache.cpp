//===- KVCache.cpp - the KV caches of a model -----------------------------===//

#include "ds/rt/KVCache.h"
#include "ds/rt/Status.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cstring>

namespace ds::rt {

//===----------------------------------------------------------------------===//
// KVCache
//===----------------------------------------------------------------------===//

absl::StatusOr<KVCache> KVCache::create(const ModelPlan &plan, int64_t slots) {
  if (slots <= 0)
    return absl::InvalidArgumentError("a KV cache needs at least one slot");
  KVCache c;
  c.slots = slots;
  for (const CacheInfo &info : plan.caches) {
    const int64_t size = static_cast<int64_t>(elemSize(info.type));
    int64_t n = 1, total = 0;
    bool overflow = false;
    for (int64_t d : info.rowShape)
      overflow |= __builtin_mul_overflow(n, d, &n);
    overflow |= __builtin_mul_overflow(n, slots, &total) ||
                total > (int64_t{1} << 60) / size;
    if (overflow)
      return outOfMemoryError(absl::StrCat("KV cache '", info.name, "' for ",
                                           slots, " slots is too large"));
    // calloc: large caches come as untouched zero pages (bf16 / f16 / e4m3
    // zero is all bits zero too), resident only once a sequence writes them.
    const size_t bytes = static_cast<size_t>(total * size);
    void *p = std::calloc(std::max<size_t>(bytes, 1), 1);
    if (!p)
      return outOfMemoryError(absl::StrCat("cannot allocate KV cache '",
                                           info.name, "' for ", slots,
                                           " slots (", bytes, " bytes)"));
    c.storage.emplace_back(p);
    c.slotElems.push_back(n);
    c.types.push_back(info.type);
    c.scales.push_back(static_cast<float>(info.scale));
  }
  return c;
}

void KVCache::storeFloats(int32_t cache, int64_t offset, const float *x,
                          int64_t count) {
  const int64_t size = static_cast<int64_t>(elemSize(types[cache]));
  kernels::narrowRow(x, count, kvType(types[cache]),
                     static_cast<char *>(storage[cache].get()) + offset * size,
                     scales[cache]);
}

void KVCache::loadFloats(int32_t cache, int64_t offset, int64_t count,
                         float *y) const {
  const int64_t size = static_cast<int64_t>(elemSize(types[cache]));
  kernels::widenRow(static_cast<const char *>(storage[cache].get()) +
                        offset * size,
                    kvType(types[cache]), count, y, scales[cache]);
}

void KVCache::clearSlot(int64_t slot) {
  for (size_t i = 0; i < storage.size(); ++i) {
    const size_t bytes = slotElems[i] * elemSize(types[i]);
    std::memset(static_cast<char *>(storage[i].get()) + slot * bytes, 0, bytes);
  }
}

} // namespace ds::rt
