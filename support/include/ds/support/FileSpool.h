//===- FileSpool.h - bytes appended to an unlinked temporary file -*- C++
//-*-===//
//
// What a producer of more bytes than memory should hold writes to instead of
// a std::string: an anonymous file (O_TMPFILE, or a temporary name unlinked at
// once) in a directory on disk, appended to with alignment, read back where
// needed, copied into its final file (copy_file_range) or mapped read-only.
// The page cache holds its pages, which the kernel can write back and evict:
// the producer's resident memory does not grow with what it has written.
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_FILESPOOL_H
#define DS_SUPPORT_FILESPOOL_H

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <cstdint>
#include <memory>
#include <string>

namespace ds {

/// Writes all `size` bytes at `data` to the end of `fd` (retrying short
/// writes and EINTR).
bool writeAll(int fd, const void *data, uint64_t size);
/// Copies `size` bytes of `from` from offset `at` to the end of `to`
/// (copy_file_range, else through a bounded buffer).
bool copyAll(int from, int to, uint64_t size, uint64_t at = 0);

class FileSpool {
public:
  /// An empty spool in `dir` ($TMPDIR, else /tmp, when empty).
  static absl::StatusOr<FileSpool> create(const std::string &dir = "");
  /// No file: appending fails, size() is 0.
  FileSpool() = default;
  FileSpool(FileSpool &&other) noexcept;
  FileSpool &operator=(FileSpool &&other) noexcept;
  FileSpool(const FileSpool &) = delete;
  FileSpool &operator=(const FileSpool &) = delete;
  ~FileSpool();

  /// Appends `size` bytes at the next multiple of `align` (zeros in
  /// between); returns their offset. After a failure (a full disk) every
  /// call fails with the first error.
  absl::StatusOr<uint64_t> append(const void *data, uint64_t size,
                                  uint64_t align = 1);
  /// Whether bytes [offset, offset + size) are those at `data`.
  bool equals(uint64_t offset, const void *data, uint64_t size) const;
  /// Bytes written, alignment included.
  uint64_t size() const { return size_; }
  /// The file, open for reading (owned by the spool).
  int fd() const { return fd_; }
  /// The first error, or OK.
  const absl::Status &status() const { return error_; }
  /// The whole file mapped read-only (page-aligned; valid for size() bytes,
  /// also after the spool is gone).
  absl::StatusOr<std::shared_ptr<const uint8_t>> map() const;

private:
  explicit FileSpool(int fd) : fd_(fd) {}
  int fd_ = -1;
  uint64_t size_ = 0;
  absl::Status error_ = absl::OkStatus();
};

} // namespace ds

#endif // DS_SUPPORT_FILESPOOL_H
