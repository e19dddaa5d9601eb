//===- SafeTensors.h - safetensors reader and writer ------------*- C++ -*-===//
//
// Reads Hugging Face safetensors files through a read-only memory map after
// validating the whole header (JSON well-formed, names unique, dtypes known,
// offsets in bounds, sizes equal to shape x dtype, tensors neither
// overlapping nor leaving holes), and whole checkpoints: one or more
// *.safetensors files, sharded ones through model.safetensors.index.json.
// Every error names the file and, where there is one, the tensor. Also writes
// safetensors files (atomically: a failed write leaves nothing behind).
//
//===----------------------------------------------------------------------===//

#ifndef DS_SUPPORT_SAFETENSORS_H
#define DS_SUPPORT_SAFETENSORS_H

#include "ds/support/DType.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace ds {

/// One tensor of a mapped file; `data` points into the mapping.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  size_t numBytes = 0;
  /// The file the tensor lives in (for messages).
  std::string file;
  /// The data is a read-only mapping of that file (not caller memory).
  bool fileMapped = false;

  int64_t numElements() const;
  /// Lets the kernel drop the tensor's pages from memory (they are read
  /// again from the file if touched later): code that reads each weight
  /// once keeps the resident set near the tensor in use, not the whole
  /// checkpoint. No effect on tensors not mapped from a file.
  void releasePages() const;
  /// The same for elements [first, first + count) only (whole pages inside
  /// them: a neighbour sharing a page may be in use): code that streams
  /// over a large tensor keeps only the slices in use resident.
  void releasePages(int64_t first, int64_t count) const;
  /// Element `i` converted to f32 (float dtypes) or to its integer value.
  float floatAt(int64_t i) const;
  int64_t intAt(int64_t i) const;
};

/// A validated, memory-mapped safetensors file.
class SafeTensorsFile {
public:
  static absl::StatusOr<std::unique_ptr<SafeTensorsFile>>
  open(const std::string &path);
  /// Validates an in-memory image (used by the fuzzer and tests); `name`
  /// stands in for the path in messages. The bytes must outlive the result.
  static absl::StatusOr<std::unique_ptr<SafeTensorsFile>>
  fromBuffer(const uint8_t *bytes, size_t size, const std::string &name);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile &) = delete;
  SafeTensorsFile &operator=(const SafeTensorsFile &) = delete;

  const std::string &path() const { return path_; }
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }
  /// Tensors in file order (ascending offset).
  const std::vector<TensorView> &tensors() const { return tensors_; }
  const TensorView *find(const std::string &name) const;

private:
  SafeTensorsFile() = default;
  absl::Status parse(const uint8_t *bytes, size_t size);

  std::string path_;
  void *mapping_ = nullptr;
  size_t mappedSize_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
};

/// All tensors of a checkpoint directory.
class Checkpoint {
public:
  /// Opens `dir`: through model.safetensors.index.json when present (every
  /// listed tensor must be in its shard), else every *.safetensors file in
  /// it (names must be unique across files). A path to a single
  /// .safetensors file also works.
  static absl::StatusOr<std::unique_ptr<Checkpoint>>
  open(const std::string &dir);
  /// A checkpoint with no tensors yet (files come with addFile).
  static std::unique_ptr<Checkpoint> empty() {
    return std::unique_ptr<Checkpoint>(new Checkpoint());
  }

  const TensorView *find(const std::string &name) const;
  /// Adds one more safetensors file (e.g. the quantized weights ds-quantize
  /// wrote); its names must not repeat any already present.
  absl::Status addFile(const std::string &path);
  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  const std::vector<std::unique_ptr<SafeTensorsFile>> &files() const {
    return files_;
  }

private:
  absl::Status adopt(std::unique_ptr<SafeTensorsFile> file);

  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const TensorView *> tensors_;
};

/// A tensor to write.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

/// Writes a safetensors file (tensors in the given order, header padded to
/// 8 bytes) through a temporary file renamed into place.
absl::Status
writeSafeTensors(const std::string &path,
                 const std::vector<TensorToWrite> &tensors,
                 const std::map<std::string, std::string> &metadata = {});

/// Writes a safetensors file tensor by tensor without holding them: each
/// tensor's bytes go to a spool file beside `path` when added (the caller
/// frees them), and finish() writes the header, then copies the spooled
/// data after it (in the kernel: copy_file_range) into a temporary file
/// renamed into place. Memory stays at one tensor whatever the file's size.
/// An error sticks: later calls return it, and nothing is renamed.
class SafeTensorsWriter {
public:
  explicit SafeTensorsWriter(std::string path);
  ~SafeTensorsWriter();
  SafeTensorsWriter(const SafeTensorsWriter &) = delete;
  SafeTensorsWriter &operator=(const SafeTensorsWriter &) = delete;

  /// Appends `t` (checked as writeSafeTensors checks it).
  absl::Status add(const TensorToWrite &t);
  /// Appends a tensor of `shape` whose bytes (zeros until written) come
  /// later through writeAt, in parts, in any order: a producer of a tensor
  /// larger than it should hold writes each part as it makes it. Returns
  /// the tensor's index for writeAt.
  absl::StatusOr<size_t> reserve(const std::string &name, DType dtype,
                                 const std::vector<int64_t> &shape);
  /// Writes `size` bytes at `offset` into reserved tensor `index`. Safe to
  /// call from several threads at once for disjoint ranges; a failure
  /// makes finish() fail.
  absl::Status writeAt(size_t index, uint64_t offset, const void *data,
                       uint64_t size);
  /// Tensors added so far.
  size_t size() const { return entries.size(); }
  /// Writes the file (tensors in the order added).
  absl::Status finish(const std::map<std::string, std::string> &metadata = {});

private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::string path, spoolPath;
  int spool = -1;
  uint64_t offset = 0;
  std::vector<Entry> entries;
  std::set<std::string> names;
  absl::Status error;
  /// A writeAt failed (set from any thread).
  std::atomic<bool> partFailed{false};
  /// Checks `t`'s name and shape against `bytes`, or returns the error.
  absl::Status check(const std::string &name, DType dtype,
                     const std::vector<int64_t> &shape, uint64_t &bytes);
};

/// Writes `contents` to `path` through a temporary file renamed into place.
absl::Status writeFileAtomically(const std::string &path,
                                 const std::string &contents);

} // namespace ds

#endif // DS_SUPPORT_SAFETENSORS_H
