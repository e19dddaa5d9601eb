//===- SafeTensors.cpp - safetensors reader and writer --------------------===//
//
// Header validation follows the safetensors specification: an 8-byte
// little-endian header length, a JSON object mapping names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" map of
// strings), then the byte buffer the offsets index. JSON is parsed with
// nlohmann::json without exceptions.
//
//===----------------------------------------------------------------------===//

#include "ds/support/SafeTensors.h"
#include "ds/support/FileSpool.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

#include <unordered_set>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <set>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ds {

using json = nlohmann::json;

namespace {
/// A SAX handler that only records the keys of the outermost object and
/// the first one that repeats.
struct TopLevelKeys {
  int depth = 0;
  std::unordered_set<std::string> seen;
  std::string duplicate;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t &) {
    return true;
  }
  bool string(json::string_t &) { return true; }
  bool binary(json::binary_t &) { return true; }
  bool start_object(std::size_t) {
    ++depth;
    return true;
  }
  bool end_object() {
    --depth;
    return true;
  }
  bool start_array(std::size_t) {
    ++depth;
    return true;
  }
  bool end_array() {
    --depth;
    return true;
  }
  bool key(json::string_t &k) {
    if (depth == 1 && !seen.insert(k).second && duplicate.empty())
      duplicate = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string &,
                   const nlohmann::detail::exception &) {
    return false;
  }
};
} // namespace

/// Headers larger than this are rejected before parsing (the reference
/// implementation's limit is 100 MB).
static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

int64_t TensorView::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

float TensorView::floatAt(int64_t i) const {
  const uint8_t *p = data + i * dtypeSize(dtype);
  switch (dtype) {
  case DType::F64: {
    double v;
    std::memcpy(&v, p, 8);
    return static_cast<float>(v);
  }
  case DType::F32: {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  case DType::F16:
  case DType::BF16: {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return dtype == DType::F16 ? halfToFloat(v) : bf16ToFloat(v);
  }
  case DType::F8E4M3:
    return f8e4m3ToFloat(*p);
  default:
    return static_cast<float>(intAt(i));
  }
}

int64_t TensorView::intAt(int64_t i) const {
  const uint8_t *p = data + i * dtypeSize(dtype);
  switch (dtype) {
  case DType::I64: {
    int64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  case DType::I32: {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  case DType::I16: {
    int16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  case DType::I8:
    return static_cast<int8_t>(*p);
  case DType::U8:
  case DType::Bool:
    return *p;
  default:
    return static_cast<int64_t>(floatAt(i));
  }
}

//===----------------------------------------------------------------------===//
// SafeTensorsFile
//===----------------------------------------------------------------------===//

SafeTensorsFile::~SafeTensorsFile() {
  if (mapping_)
    munmap(mapping_, mappedSize_);
}

absl::StatusOr<std::unique_ptr<SafeTensorsFile>>
SafeTensorsFile::open(const std::string &path) {
  // The type first: opening a FIFO would block until a writer comes.
  if (struct stat pre; ::stat(path.c_str(), &pre) == 0 && !S_ISREG(pre.st_mode))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::InternalError(
        absl::StrCat(path, ": cannot stat: ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  auto file = std::unique_ptr<SafeTensorsFile>(new SafeTensorsFile());
  file->path_ = path;
  size_t size = static_cast<size_t>(st.st_size);
  const uint8_t *bytes = nullptr;
  if (size > 0) {
    void *m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      return absl::InternalError(
          absl::StrCat(path, ": cannot map: ", std::strerror(err)));
    }
    file->mapping_ = m;
    file->mappedSize_ = size;
    bytes = static_cast<const uint8_t *>(m);
  }
  ::close(fd);
  if (absl::Status s = file->parse(bytes, size); !s.ok())
    return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafeTensorsFile>>
SafeTensorsFile::fromBuffer(const uint8_t *bytes, size_t size,
                            const std::string &name) {
  auto file = std::unique_ptr<SafeTensorsFile>(new SafeTensorsFile());
  file->path_ = name;
  if (absl::Status s = file->parse(bytes, size); !s.ok())
    return s;
  return file;
}

absl::Status SafeTensorsFile::parse(const uint8_t *bytes, size_t size) {
  auto error = [&](auto &&...parts) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", parts...));
  };
  if (size < 8)
    return error("truncated: ", size,
                 " bytes, shorter than the 8-byte header "
                 "length");
  uint64_t headerLen = 0;
  for (int i = 7; i >= 0; --i)
    headerLen = (headerLen << 8) | bytes[i];
  if (headerLen > kMaxHeaderBytes)
    return error("header length ", headerLen, " exceeds the ", kMaxHeaderBytes,
                 "-byte limit");
  if (headerLen > size - 8)
    return error("header length ", headerLen, " is larger than the file (",
                 size, " bytes)");
  const char *headerBegin = reinterpret_cast<const char *>(bytes + 8);
  std::string_view header(headerBegin, headerLen);
  if (header.empty() || header.front() != '{')
    return error("header is not a JSON object");

  // The keys of the top-level object, to reject duplicates (a plain parse
  // keeps the last silently): a SAX pass that builds nothing. nlohmann's
  // callback parser would do it in the DOM pass, but it rescans the parent
  // object at every closing brace - quadratic in the number of tensors.
  std::string duplicate;
  {
    TopLevelKeys keys;
    if (!json::sax_parse(header.begin(), header.end(), &keys) ||
        keys.depth != 0)
      return error("header is not well-formed JSON");
    duplicate = keys.duplicate;
  }
  json root = json::parse(header.begin(), header.end(), nullptr,
                          /*allow_exceptions=*/false);
  if (root.is_discarded())
    return error("header is not well-formed JSON");
  if (!root.is_object())
    return error("header is not a JSON object");
  if (!duplicate.empty())
    return error("tensor '", duplicate, "' appears twice in the header");

  const uint64_t bufferSize = size - 8 - headerLen;
  const uint8_t *buffer = bytes + 8 + headerLen;
  struct Span {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Span> spans;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string &name = it.key();
    const json &entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object())
        return error("__metadata__ must be an object of strings");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          return error("__metadata__ value '", m.key(), "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto tensorError = [&](auto &&...parts) {
      return error("tensor '", name, "': ", parts...);
    };
    if (!entry.is_object())
      return tensorError("entry is not an object");
    auto dtypeIt = entry.find("dtype");
    auto shapeIt = entry.find("shape");
    auto offsetsIt = entry.find("data_offsets");
    if (dtypeIt == entry.end() || !dtypeIt->is_string())
      return tensorError("missing string 'dtype'");
    if (shapeIt == entry.end() || !shapeIt->is_array())
      return tensorError("missing array 'shape'");
    if (offsetsIt == entry.end() || !offsetsIt->is_array() ||
        offsetsIt->size() != 2)
      return tensorError("'data_offsets' must be [begin, end]");
    std::string dtypeText = dtypeIt->get<std::string>();
    std::optional<DType> dtype = parseDType(dtypeText);
    if (!dtype)
      return tensorError("unsupported dtype '", dtypeText, "'");
    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    view.file = path_;
    view.fileMapped = mapping_ != nullptr;
    // Element count with overflow checks: sizes must fit the buffer anyway.
    uint64_t elements = 1;
    for (const json &d : *shapeIt) {
      if (!d.is_number_unsigned())
        return tensorError("shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) ||
          (dim != 0 && elements > UINT64_MAX / dim))
        return tensorError("shape is too large");
      elements *= dim;
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const json &o : *offsetsIt)
      if (!o.is_number_unsigned())
        return tensorError("data_offsets must be non-negative integers");
    uint64_t begin = (*offsetsIt)[0].get<uint64_t>();
    uint64_t end = (*offsetsIt)[1].get<uint64_t>();
    if (begin > end)
      return tensorError("data_offsets [", begin, ", ", end, "] are reversed");
    if (end > bufferSize)
      return tensorError("data_offsets [", begin, ", ", end,
                         "] run past the end of the data (", bufferSize,
                         " bytes)");
    uint64_t elementSize = dtypeSize(*dtype);
    if (elements > UINT64_MAX / elementSize ||
        elements * elementSize != end - begin)
      return tensorError("holds ", end - begin,
                         " bytes but shape x dtype "
                         "needs ",
                         elements, " x ", elementSize);
    view.data = buffer + begin;
    view.numBytes = end - begin;
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(view));
  }
  std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (const Span &s : spans) {
    if (s.begin < covered)
      return error("tensor '", tensors_[s.index].name,
                   "' overlaps the tensor before it (offset ", s.begin, " < ",
                   covered, ")");
    if (s.begin > covered)
      return error("bytes [", covered, ", ", s.begin,
                   ") of the data are not part of any tensor (before '",
                   tensors_[s.index].name, "')");
    covered = s.end;
  }
  if (covered != bufferSize)
    return error("bytes [", covered, ", ", bufferSize,
                 ") at the end of the data are not part of any tensor");
  // File order.
  std::vector<TensorView> ordered;
  ordered.reserve(spans.size());
  for (const Span &s : spans)
    ordered.push_back(std::move(tensors_[s.index]));
  tensors_ = std::move(ordered);
  for (size_t i = 0; i < tensors_.size(); ++i)
    index_[tensors_[i].name] = i;
  return absl::OkStatus();
}

void TensorView::releasePages() const { releasePages(0, numElements()); }

void TensorView::releasePages(int64_t first, int64_t count) const {
  if (!fileMapped || count <= 0 || first < 0 || first + count > numElements())
    return;
  // Whole pages inside the range only: a neighbour sharing a page may be
  // in use.
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const size_t size = dtypeSize(dtype);
  const uintptr_t start =
      reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(first) * size;
  uintptr_t begin = (start + page - 1) & ~(page - 1);
  uintptr_t end = (start + static_cast<uintptr_t>(count) * size) & ~(page - 1);
  if (end > begin)
    madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
}

const TensorView *SafeTensorsFile::find(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

//===----------------------------------------------------------------------===//
// Checkpoint
//===----------------------------------------------------------------------===//

/// A regular file of at most 256 MiB (a sharded checkpoint's index; DeepSeek-
/// V3's is 9 MB): a FIFO would block, a device never end.
static absl::StatusOr<std::string> readWholeFile(const std::string &path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  if (!S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  constexpr off_t kMaxIndexBytes = off_t{256} << 20;
  if (st.st_size > kMaxIndexBytes)
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", st.st_size, " bytes; an index is at most ",
                     kMaxIndexBytes));
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

static bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

absl::StatusOr<std::unique_ptr<Checkpoint>>
Checkpoint::open(const std::string &dir) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  struct stat st;
  if (stat(dir.c_str(), &st) != 0)
    return absl::NotFoundError(
        absl::StrCat(dir, ": no such file or directory"));
  std::vector<std::string> files;
  std::string indexPath = dir + "/model.safetensors.index.json";
  json weightMap;
  bool sharded = false;
  if (S_ISREG(st.st_mode)) {
    files.push_back(dir);
  } else if (struct stat ist; stat(indexPath.c_str(), &ist) == 0) {
    sharded = true;
    absl::StatusOr<std::string> text = readWholeFile(indexPath);
    if (!text.ok())
      return text.status();
    json index = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(indexPath, ": not a well-formed JSON object"));
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(indexPath, ": missing object 'weight_map'"));
    weightMap = *wm;
    std::set<std::string> shards;
    for (auto it = weightMap.begin(); it != weightMap.end(); ++it) {
      if (!it.value().is_string())
        return absl::InvalidArgumentError(absl::StrCat(
            indexPath, ": weight_map entry '", it.key(), "' is not a string"));
      std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..")
        return absl::InvalidArgumentError(absl::StrCat(
            indexPath, ": shard '", shard, "' is not a file name"));
      shards.insert(shard);
    }
    for (const std::string &s : shards)
      files.push_back(dir + "/" + s);
  } else {
    DIR *d = opendir(dir.c_str());
    if (!d)
      return absl::NotFoundError(absl::StrCat(dir, ": cannot list directory"));
    while (dirent *e = readdir(d)) {
      std::string name = e->d_name;
      if (endsWith(name, ".safetensors"))
        files.push_back(dir + "/" + name);
    }
    closedir(d);
    std::sort(files.begin(), files.end());
    if (files.empty())
      return absl::NotFoundError(absl::StrCat(dir, ": no *.safetensors files"));
  }
  for (const std::string &f : files) {
    absl::StatusOr<std::unique_ptr<SafeTensorsFile>> file =
        SafeTensorsFile::open(f);
    if (!file.ok())
      return file.status();
    if (absl::Status st = ckpt->adopt(std::move(*file)); !st.ok())
      return st;
  }
  if (sharded) {
    for (auto it = weightMap.begin(); it != weightMap.end(); ++it) {
      std::string shard = dir + "/" + it.value().get<std::string>();
      const TensorView *t = ckpt->find(it.key());
      if (!t || t->file != shard)
        return absl::NotFoundError(absl::StrCat(
            indexPath, ": tensor '", it.key(), "' is not in ", shard));
    }
  }
  return ckpt;
}

absl::Status Checkpoint::adopt(std::unique_ptr<SafeTensorsFile> file) {
  for (const TensorView &t : file->tensors()) {
    auto [it, inserted] = tensors_.emplace(t.name, &t);
    if (!inserted)
      return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor '",
                                                     t.name, "' is also in ",
                                                     it->second->file));
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::Status Checkpoint::addFile(const std::string &path) {
  absl::StatusOr<std::unique_ptr<SafeTensorsFile>> file =
      SafeTensorsFile::open(path);
  if (!file.ok())
    return file.status();
  return adopt(std::move(*file));
}

const TensorView *Checkpoint::find(const std::string &name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto &[name, view] : tensors_)
    out.push_back(name);
  return out;
}

//===----------------------------------------------------------------------===//
// Writing
//===----------------------------------------------------------------------===//

absl::Status writeFileAtomically(const std::string &path,
                                 const std::string &contents) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      return absl::PermissionDeniedError(
          absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::DataLossError(absl::StrCat(path, ": write failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat(path, ": cannot rename into place: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

SafeTensorsWriter::SafeTensorsWriter(std::string path)
    : path(std::move(path)),
      spoolPath(this->path + ".spool." + std::to_string(getpid())) {
  spool =
      ::open(spoolPath.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (spool < 0)
    error = absl::PermissionDeniedError(
        absl::StrCat(this->path, ": cannot create: ", std::strerror(errno)));
}

SafeTensorsWriter::~SafeTensorsWriter() {
  if (spool >= 0) {
    ::close(spool);
    ::unlink(spoolPath.c_str());
  }
}

absl::Status SafeTensorsWriter::check(const std::string &name, DType dtype,
                                      const std::vector<int64_t> &shape,
                                      uint64_t &bytes) {
  if (!error.ok())
    return error;
  if (!names.insert(name).second)
    return error = absl::InvalidArgumentError(
               absl::StrCat(path, ": tensor '", name, "' given twice"));
  uint64_t elements = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return error = absl::InvalidArgumentError(absl::StrCat(
                 path, ": tensor '", name, "' has a negative dim"));
    elements *= static_cast<uint64_t>(d);
  }
  bytes = elements * dtypeSize(dtype);
  return absl::OkStatus();
}

absl::Status SafeTensorsWriter::add(const TensorToWrite &t) {
  uint64_t bytes = 0;
  if (absl::Status st = check(t.name, t.dtype, t.shape, bytes); !st.ok())
    return st;
  if (bytes != t.bytes.size())
    return error = absl::InvalidArgumentError(absl::StrCat(
               path, ": tensor '", t.name, "' has ", t.bytes.size(),
               " bytes, shape x dtype needs ", bytes));
  if (!writeAll(spool, t.bytes.data(), t.bytes.size()))
    return error = absl::DataLossError(
               absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  entries.push_back(
      {t.name, t.dtype, t.shape, offset, offset + t.bytes.size()});
  offset += t.bytes.size();
  return absl::OkStatus();
}

absl::StatusOr<size_t>
SafeTensorsWriter::reserve(const std::string &name, DType dtype,
                           const std::vector<int64_t> &shape) {
  uint64_t bytes = 0;
  if (absl::Status st = check(name, dtype, shape, bytes); !st.ok())
    return st;
  // A hole the parts fill in; later tensors are appended after it.
  if (::ftruncate(spool, static_cast<off_t>(offset + bytes)) != 0 ||
      ::lseek(spool, static_cast<off_t>(offset + bytes), SEEK_SET) < 0)
    return error = absl::DataLossError(
               absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  entries.push_back({name, dtype, shape, offset, offset + bytes});
  offset += bytes;
  return entries.size() - 1;
}

absl::Status SafeTensorsWriter::writeAt(size_t index, uint64_t at,
                                        const void *data, uint64_t size) {
  if (index >= entries.size() ||
      at + size > entries[index].end - entries[index].begin) {
    partFailed = true;
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": a part written outside its tensor"));
  }
  const auto *bytes = static_cast<const uint8_t *>(data);
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(spool, bytes + done, size - done,
                         static_cast<off_t>(entries[index].begin + at + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      partFailed = true;
      return absl::DataLossError(
          absl::StrCat(path, ": write failed: ", std::strerror(errno)));
    }
    done += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status
SafeTensorsWriter::finish(const std::map<std::string, std::string> &metadata) {
  if (!error.ok())
    return error;
  if (partFailed)
    return error = absl::DataLossError(
               absl::StrCat(path, ": a part of a tensor was not written"));
  json header = json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  for (const Entry &e : entries)
    header[e.name] = {{"dtype", std::string(dtypeName(e.dtype))},
                      {"shape", e.shape},
                      {"data_offsets", {e.begin, e.end}}};
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0)
    text.push_back(' ');
  char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<char>((uint64_t{text.size()} >> (8 * i)) & 0xff);
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0)
    return error = absl::PermissionDeniedError(
               absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
  bool ok = writeAll(out, len, 8) && writeAll(out, text.data(), text.size()) &&
            copyAll(spool, out, offset);
  ok = ::close(out) == 0 && ok;
  if (!ok) {
    ::unlink(tmp.c_str());
    return error = absl::DataLossError(absl::StrCat(path, ": write failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return error = absl::InternalError(absl::StrCat(
               path, ": cannot rename into place: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status
writeSafeTensors(const std::string &path,
                 const std::vector<TensorToWrite> &tensors,
                 const std::map<std::string, std::string> &metadata) {
  SafeTensorsWriter writer(path);
  for (const TensorToWrite &t : tensors)
    if (absl::Status st = writer.add(t); !st.ok())
      return st;
  return writer.finish(metadata);
}

} // namespace ds
