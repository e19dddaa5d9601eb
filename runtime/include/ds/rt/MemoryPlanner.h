//===- MemoryPlanner.h - liveness-based buffer placement ---------*- C++
//-*-===//
//
// Intermediate tensors of an execution plan share one preallocated arena:
// two buffers may overlap in memory only if their lifetimes (the steps from
// the one that writes them to the last that reads them) are disjoint.
// Placement is greedy by size (largest first, each at the lowest offset
// that fits beside the already placed buffers it is live with), which is
// what TFLite's arena planner does and is within a few percent of optimal
// on transformer graphs. The arena itself is one mapping, aligned to 2 MiB
// and advised for transparent huge pages, and touched once when created so
// that no request pays for first-touch page faults (11-14 us per 4 KiB page
// on these machines).
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_MEMORYPLANNER_H
#define DS_RT_MEMORYPLANNER_H

#include "absl/status/statusor.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ds::rt {

struct BufferRequest {
  uint64_t size = 0;
  /// A power of two.
  uint64_t alignment = 64;
  /// Steps [firstUse, lastUse], inclusive.
  int64_t firstUse = 0, lastUse = 0;
};

struct MemoryPlan {
  /// Offset of each request in the arena.
  std::vector<uint64_t> offsets;
  /// Bytes the arena needs.
  uint64_t arenaSize = 0;
  /// Sum of the sizes (what giving every buffer its own memory would take).
  uint64_t totalSize = 0;
};

/// Places `requests` (invalid ones -- zero or non-power-of-two alignment,
/// lastUse < firstUse, sizes that overflow -- are an error).
absl::StatusOr<MemoryPlan>
planMemory(const std::vector<BufferRequest> &requests);

/// True when no two buffers that are live at the same step overlap, every
/// offset respects its alignment, and everything fits in the arena.
bool isValidPlan(const std::vector<BufferRequest> &requests,
                 const MemoryPlan &plan);

/// One mapping of at least `size` bytes, 2 MiB aligned, huge pages advised,
/// every page touched at creation.
class Arena {
public:
  static absl::StatusOr<Arena> create(uint64_t size);
  Arena() = default;
  Arena(Arena &&other) noexcept;
  Arena &operator=(Arena &&other) noexcept;
  Arena(const Arena &) = delete;
  Arena &operator=(const Arena &) = delete;
  ~Arena();

  uint8_t *data() const { return base; }
  uint64_t size() const { return length; }

private:
  uint8_t *base = nullptr;
  uint64_t length = 0;
};

} // namespace ds::rt

#endif // DS_RT_MEMORYPLANNER_H
