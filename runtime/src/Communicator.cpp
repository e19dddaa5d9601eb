//===- Communicator.cpp - helpers over the communicator interface ---------===//

#include "ds/rt/Device.h"

#include "absl/status/status.h"

namespace ds::rt {

absl::Status buildAllGroups(Communicator &comm,
                            const std::vector<int64_t> &shape) {
  const size_t n = shape.size();
  if (n > kMaxGridAxes)
    return absl::InvalidArgumentError("a grid of too many axes");
  for (uint64_t mask = 1; mask + 1 < (uint64_t{1} << n); ++mask) {
    std::vector<int64_t> axes;
    for (size_t a = 0; a < n; ++a)
      if (mask & (uint64_t{1} << a))
        axes.push_back(static_cast<int64_t>(a));
    if (absl::StatusOr<Communicator *> g = comm.group(shape, axes); !g.ok())
      return g.status();
  }
  return absl::OkStatus();
}

} // namespace ds::rt
