//===- FileSpool.cpp - bytes appended to an unlinked temporary file -------===//

#include "ds/support/FileSpool.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

namespace ds {

bool writeAll(int fd, const void *data, uint64_t size) {
  const auto *p = static_cast<const char *>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    size -= static_cast<uint64_t>(n);
  }
  return true;
}

bool copyAll(int from, int to, uint64_t size, uint64_t at) {
  off_t in = static_cast<off_t>(at);
  while (size > 0) {
    ssize_t n = ::copy_file_range(from, &in, to, nullptr, size, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; // not supported here (or a short file): copy through memory
    size -= static_cast<uint64_t>(n);
  }
  std::vector<char> buffer(std::min<uint64_t>(size, uint64_t{8} << 20));
  while (size > 0) {
    ssize_t n = ::pread(from, buffer.data(),
                        std::min<uint64_t>(size, buffer.size()), in);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0 || !writeAll(to, buffer.data(), static_cast<uint64_t>(n)))
      return false;
    in += n;
    size -= static_cast<uint64_t>(n);
  }
  return true;
}

absl::StatusOr<FileSpool> FileSpool::create(const std::string &dir) {
  std::string where = dir;
  if (where.empty()) {
    const char *tmp = std::getenv("TMPDIR");
    where = tmp && *tmp ? tmp : "/tmp";
  }
  int fd = ::open(where.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    // A file system without O_TMPFILE: a named file, unlinked at once.
    std::string name = where + "/ds-spool-XXXXXX";
    fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd >= 0)
      ::unlink(name.c_str());
  }
  if (fd < 0)
    return absl::UnavailableError("cannot create a temporary file in " + where +
                                  ": " + std::strerror(errno));
  return FileSpool(fd);
}

FileSpool::FileSpool(FileSpool &&other) noexcept
    : fd_(other.fd_), size_(other.size_), error_(std::move(other.error_)) {
  other.fd_ = -1;
  other.size_ = 0;
}

FileSpool &FileSpool::operator=(FileSpool &&other) noexcept {
  if (this != &other) {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = other.fd_;
    size_ = other.size_;
    error_ = std::move(other.error_);
    other.fd_ = -1;
    other.size_ = 0;
  }
  return *this;
}

FileSpool::~FileSpool() {
  if (fd_ >= 0)
    ::close(fd_);
}

absl::StatusOr<uint64_t> FileSpool::append(const void *data, uint64_t size,
                                           uint64_t align) {
  if (!error_.ok())
    return error_;
  if (fd_ < 0)
    return error_ = absl::FailedPreconditionError("a spool with no file");
  const uint64_t at = (size_ + align - 1) / align * align;
  static const char zeros[64] = {};
  bool ok = true;
  for (uint64_t pad = at - size_; ok && pad > 0;) {
    const uint64_t n = std::min<uint64_t>(pad, sizeof(zeros));
    ok = writeAll(fd_, zeros, n);
    pad -= n;
  }
  if (ok && size > 0)
    ok = writeAll(fd_, data, size);
  if (!ok) {
    error_ = absl::UnavailableError(std::string("writing a temporary file: ") +
                                    std::strerror(errno));
    return error_;
  }
  size_ = at + size;
  return at;
}

bool FileSpool::equals(uint64_t offset, const void *data, uint64_t size) const {
  if (offset + size > size_)
    return false;
  const auto *want = static_cast<const char *>(data);
  std::vector<char> buffer(std::min<uint64_t>(size, uint64_t{1} << 20));
  uint64_t done = 0;
  while (done < size) {
    const uint64_t n = std::min<uint64_t>(size - done, buffer.size());
    ssize_t got =
        ::pread(fd_, buffer.data(), n, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0 || std::memcmp(buffer.data(), want + done, got) != 0)
      return false;
    done += static_cast<uint64_t>(got);
  }
  return true;
}

absl::StatusOr<std::shared_ptr<const uint8_t>> FileSpool::map() const {
  if (!error_.ok())
    return error_;
  if (size_ == 0) {
    static const uint8_t empty[64] = {};
    return std::shared_ptr<const uint8_t>(empty, [](const uint8_t *) {});
  }
  void *p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED)
    return absl::ResourceExhaustedError(
        std::string("cannot map the temporary file: ") + std::strerror(errno));
  const uint64_t bytes = size_;
  return std::shared_ptr<const uint8_t>(
      static_cast<const uint8_t *>(p),
      [bytes](const uint8_t *q) { ::munmap(const_cast<uint8_t *>(q), bytes); });
}

} // namespace ds
