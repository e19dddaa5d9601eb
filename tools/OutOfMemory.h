//===- OutOfMemory.h - a clear error when a tool runs out of memory -*- C++
//-*-===//
//
// What the ds tools do when an allocation fails: print one line naming the
// tool and what to try, and exit with status 1, instead of LLVM's default
// ("LLVM ERROR: out of memory", a request to file a bug report and a stack
// dump from abort). A model too large for the machine or for a limit (ulimit
// -d / -v, a cgroup) is bad input, not a crash.
//
//===----------------------------------------------------------------------===//

#ifndef DS_TOOLS_OUTOFMEMORY_H
#define DS_TOOLS_OUTOFMEMORY_H

#include "llvm/Support/ErrorHandling.h"

#include <cstring>
#include <unistd.h>

namespace ds::tools {

/// The message: `tool`, then `hint` (static strings; nothing is allocated
/// when memory has run out).
struct OutOfMemoryMessage {
  const char *tool;
  const char *hint;
};

/// Installs the handler for the rest of the process (after llvm::InitLLVM,
/// which installs the new-handler that reports the failure).
inline void exitOnOutOfMemory(const OutOfMemoryMessage &message) {
  llvm::install_bad_alloc_error_handler(
      [](void *data, const char *reason, bool) {
        const auto *m = static_cast<const OutOfMemoryMessage *>(data);
        auto put = [](const char *s) {
          if (s && ::write(2, s, std::strlen(s)) < 0)
            return;
        };
        put(m->tool);
        put(": error: out of memory (");
        put(reason);
        put(")");
        if (m->hint && *m->hint) {
          put(": ");
          put(m->hint);
        }
        put("\n");
        ::_exit(1);
      },
      const_cast<OutOfMemoryMessage *>(&message));
}

} // namespace ds::tools

#endif // DS_TOOLS_OUTOFMEMORY_H
