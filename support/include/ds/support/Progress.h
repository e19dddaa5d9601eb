//===- Progress.h - progress of long work on a terminal -------------------===//
//
// One line on stderr, rewritten in place at most ten times a second: what is
// being done, items done of the total, bytes and rate, and the time left.
// On by default when stderr is a terminal, off in pipes and logs;
// DS_PROGRESS=1 turns it on anywhere (one line per update then), 0 off.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_PROGRESS_H
#define DS_SUPPORT_PROGRESS_H

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace ds {

/// Whether progress is shown: DS_PROGRESS=1 / 0, else whether stderr is a
/// terminal. `force` (a tool's --progress) turns it on.
bool progressEnabled(bool force = false);

class Progress {
public:
  /// `what`: "ds-compile: weights"; `total` items (0: unknown).
  Progress(std::string what, int64_t total, bool force = false);
  /// Ends the line with the final figures (when enabled and anything was
  /// done).
  ~Progress();
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;

  /// `items` more done, `bytes` more processed. Thread-safe.
  void advance(int64_t items = 1, uint64_t bytes = 0);

private:
  void show(bool last);

  std::string what;
  int64_t total, done = 0;
  uint64_t bytes = 0;
  bool enabled, terminal, shown = false;
  std::chrono::steady_clock::time_point start, lastShown;
  std::mutex mutex;
};

} // namespace ds

#endif // DS_SUPPORT_PROGRESS_H
