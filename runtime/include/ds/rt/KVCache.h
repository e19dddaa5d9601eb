//===- KVCache.h - the KV caches of a model for a number of slots ---------===//
//
// Every cache of a model (per layer keys and values, or MLA latents), for a
// fixed number of sequence slots; batch row b of a step reads and writes
// slot slots[b]. Each cache stores its plan type (f32, or bf16 / f16 / e4m3
// with a scale for a narrow cache) and is zeroed per slot when a sequence
// starts.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_KVCACHE_H
#define DS_RT_KVCACHE_H

#include "ds/rt/Kernels.h"
#include "ds/rt/Plan.h"

#include "absl/status/statusor.h"

#include <cstdlib>
#include <memory>
#include <vector>

namespace ds::rt {

/// The kernels' name for how a cache's elements are stored (a plan's cache
/// types are F32, BF16, F16 or F8E4M3; the loader refuses others).
inline kernels::KVType kvType(ElemType t) {
  return t == ElemType::BF16     ? kernels::KVType::BF16
         : t == ElemType::F16    ? kernels::KVType::F16
         : t == ElemType::F8E4M3 ? kernels::KVType::F8E4M3
                                 : kernels::KVType::F32;
}

/// The KV caches of a model for `slots` sequences.
class KVCache {
public:
  static absl::StatusOr<KVCache> create(const ModelPlan &plan, int64_t slots);
  int64_t numSlots() const { return slots; }
  /// Cache i's storage: slots x slotSize(i) elements of type(i).
  void *data(int32_t cache) { return storage[cache].get(); }
  /// Elements per slot of cache i.
  int64_t slotSize(int32_t cache) const { return slotElems[cache]; }
  ElemType type(int32_t cache) const { return types[cache]; }
  /// An e4m3 cache's scale (1 for the other types).
  float scale(int32_t cache) const { return scales[cache]; }
  /// Writes x[0, count) into cache i from element `offset` on (slot s
  /// starts at s * slotSize(i)), rounded to nearest even as the cache's type
  /// (and scale) stores them. The range must lie inside the cache.
  void storeFloats(int32_t cache, int64_t offset, const float *x,
                   int64_t count);
  /// Reads elements [offset, offset + count) of cache i as f32 (exact).
  void loadFloats(int32_t cache, int64_t offset, int64_t count, float *y) const;
  /// Zeroes one slot (a new sequence).
  void clearSlot(int64_t slot);

private:
  int64_t slots = 0;
  struct Free {
    void operator()(void *p) const { std::free(p); }
  };
  std::vector<std::unique_ptr<void, Free>> storage;
  std::vector<int64_t> slotElems;
  std::vector<ElemType> types;
  std::vector<float> scales;
};

} // namespace ds::rt

#endif // DS_RT_KVCACHE_H
