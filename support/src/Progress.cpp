//===- Progress.cpp - progress of long work on a terminal -----------------===//

#include "ds/support/Progress.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace ds {

bool progressEnabled(bool force) {
  if (force)
    return true;
  if (const char *v = std::getenv("DS_PROGRESS"))
    return std::strcmp(v, "0") != 0 && *v;
  return isatty(STDERR_FILENO);
}

Progress::Progress(std::string what, int64_t total, bool force)
    : what(std::move(what)), total(total), enabled(progressEnabled(force)),
      terminal(isatty(STDERR_FILENO)), start(std::chrono::steady_clock::now()),
      lastShown(start) {}

Progress::~Progress() {
  if (enabled && (shown || done > 0))
    show(/*last=*/true);
}

void Progress::advance(int64_t items, uint64_t more) {
  std::lock_guard<std::mutex> lock(mutex);
  done += items;
  bytes += more;
  if (!enabled)
    return;
  auto now = std::chrono::steady_clock::now();
  // A tenth of a second between updates on a terminal, a second in logs.
  auto every = terminal ? std::chrono::milliseconds(100)
                        : std::chrono::milliseconds(1000);
  // The last update is the destructor's.
  if (now - lastShown < every || (total > 0 && done >= total))
    return;
  lastShown = now;
  show(/*last=*/false);
}

void Progress::show(bool last) {
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  char line[256];
  int n = std::snprintf(line, sizeof line, "%s: %lld", what.c_str(),
                        static_cast<long long>(done));
  if (total > 0)
    n += std::snprintf(line + n, sizeof line - n, "/%lld",
                       static_cast<long long>(total));
  if (bytes > 0 && n < static_cast<int>(sizeof line))
    n += std::snprintf(line + n, sizeof line - n, ", %.1f MB, %.1f MB/s",
                       bytes / 1e6, secs > 0 ? bytes / 1e6 / secs : 0.0);
  if (total > 0 && done > 0 && !last && n < static_cast<int>(sizeof line))
    n += std::snprintf(line + n, sizeof line - n, ", %.0f s left",
                       secs * static_cast<double>(total - done) / done);
  if (last && n < static_cast<int>(sizeof line))
    n += std::snprintf(line + n, sizeof line - n, ", %.1f s", secs);
  std::fprintf(stderr, terminal ? "\r%s\033[K%s" : "%s%s", line,
               terminal && !last ? "" : "\n");
  std::fflush(stderr);
  shown = true;
}

} // namespace ds
