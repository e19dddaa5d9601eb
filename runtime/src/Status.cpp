//===- Status.cpp - memory failures as marked ResourceExhausted -----------===//

#include "ds/rt/Status.h"

#include "absl/strings/cord.h"

namespace ds::rt {

namespace {
constexpr absl::string_view kOutOfMemoryPayload = "ds.rt/out-of-memory";
} // namespace

absl::Status outOfMemoryError(absl::string_view message) {
  absl::Status s = absl::ResourceExhaustedError(message);
  s.SetPayload(kOutOfMemoryPayload, absl::Cord("1"));
  return s;
}

bool isOutOfMemory(const absl::Status &status) {
  return status.code() == absl::StatusCode::kResourceExhausted &&
         status.GetPayload(kOutOfMemoryPayload).has_value();
}

} // namespace ds::rt
