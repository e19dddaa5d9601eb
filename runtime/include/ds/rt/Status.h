//===- Status.h - the runtime's error kinds beyond absl's codes -----------===//
//
// absl::StatusCode has one code, ResourceExhausted, for both "no memory" and
// "the queue is full"; the C API keeps them apart (DS_OUT_OF_MEMORY,
// DS_RESOURCE_EXHAUSTED). A memory failure is a ResourceExhausted status
// that carries this header's payload.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_STATUS_H
#define DS_RT_STATUS_H

#include "absl/status/status.h"

#include "absl/strings/string_view.h"

namespace ds::rt {

/// A ResourceExhausted status marked as a memory failure: an allocation
/// that failed, or working memory over the executor's limit.
absl::Status outOfMemoryError(absl::string_view message);
bool isOutOfMemory(const absl::Status &status);

} // namespace ds::rt

#endif // DS_RT_STATUS_H
