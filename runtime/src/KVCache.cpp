//===- KVCache.cpp - the KV caches of a model -----------------------------===//

#include "ds/rt/KVCache.h"
#include "ds/rt/Status.h"

#include "absl/strings/str_cat.h"

#include <algorithm>

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
    int64_t n = 1, total = 0;
    bool overflow = false;
    for (int64_t d : info.rowShape)
      overflow |= __builtin_mul_overflow(n, d, &n);
    overflow |=
        __builtin_mul_overflow(n, slots, &total) ||
        total > (int64_t{1} << 60) / static_cast<int64_t>(sizeof(float));
    if (overflow)
      return outOfMemoryError(absl::StrCat("KV cache '", info.name, "' for ",
                                           slots, " slots is too large"));
    c.slotFloats.push_back(n);
    try {
      c.storage.emplace_back(static_cast<size_t>(total), 0.0f);
    } catch (const std::bad_alloc &) {
      return outOfMemoryError(
          absl::StrCat("cannot allocate KV cache '", info.name, "' for ", slots,
                       " slots (", total * sizeof(float), " bytes)"));
    }
  }
  return c;
}

void KVCache::clearSlot(int64_t slot) {
  for (size_t i = 0; i < storage.size(); ++i)
    std::fill_n(storage[i].data() + slot * slotFloats[i], slotFloats[i], 0.0f);
}

} // namespace ds::rt
