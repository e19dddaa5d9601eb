//===- KVCache.h - the KV caches of a model for a number of slots ---------===//
//
// Every cache of a model (per layer keys and values, or MLA latents), for a
// fixed number of sequence slots; batch row b of a step reads and writes
// slot slots[b]. f32 storage, zeroed per slot when a sequence starts.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KVCACHE_H
#define DS_RT_KVCACHE_H

#include "ds/rt/Plan.h"

#include "absl/status/statusor.h"

#include <vector>

namespace ds::rt {

/// The KV caches of a model for `slots` sequences.
class KVCache {
public:
  static absl::StatusOr<KVCache> create(const ModelPlan &plan, int64_t slots);
  int64_t numSlots() const { return slots; }
  float *data(int32_t cache) { return storage[cache].data(); }
  /// Floats per slot of cache i.
  int64_t slotSize(int32_t cache) const { return slotFloats[cache]; }
  /// Zeroes one slot (a new sequence).
  void clearSlot(int64_t slot);

private:
  int64_t slots = 0;
  std::vector<std::vector<float>> storage;
  std::vector<int64_t> slotFloats;
};

} // namespace ds::rt

#endif // DS_RT_KVCACHE_H
