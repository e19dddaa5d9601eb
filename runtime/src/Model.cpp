//===- Model.cpp - artifact loading
//----------------------------------------===//
//
// mmap of the file, the header's plan decoded and checked (Plan.cpp), the
// sections' checksums, the target's instruction sets against this CPU, the
// code loaded from a memfd with dlopen, and every weight bound to its
// packed view.
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Model.h"
#include "ds/rt/CpuInfo.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ds::rt {
using json = nlohmann::json;

//===----------------------------------------------------------------------===//
// Model
//===----------------------------------------------------------------------===//

Model::~Model() {
  if (library)
    dlclose(library);
  if (mapping)
    munmap(mapping, mappingSize);
}

Model::Kernel Model::kernel(const std::string &symbol) const {
  auto it = kernels_.find(symbol);
  return it == kernels_.end() ? nullptr : it->second;
}

absl::Status Model::bind(SymbolResolver resolve) {
  // Weights: every entry inside the section and aligned for the kernels.
  for (const WeightInfo &w : plan_.weights) {
    if (w.offset > weightsSize || w.bytes > weightsSize - w.offset)
      return absl::DataLossError("weight '" + w.name +
                                 "' lies outside the weights section");
    if (w.offset % 64)
      return absl::DataLossError("weight '" + w.name + "' is not aligned");
    int64_t elems = 1;
    for (int64_t d : w.shape) {
      if (d < 0 || (d > 0 && elems > (int64_t{1} << 40) / d))
        return absl::DataLossError("weight '" + w.name + "' has a bad shape");
      elems *= d;
    }
    const uint8_t *data = weightsBase + w.offset;
    weightPtrs.push_back(data);
    std::vector<kernels::PackedWeight> views;
    if (w.layout == WeightLayout::Raw) {
      if (w.bytes != static_cast<uint64_t>(elems) * elemSize(w.type))
        return absl::DataLossError("weight '" + w.name + "' has " +
                                   std::to_string(w.bytes) +
                                   " bytes, its shape needs " +
                                   std::to_string(elems * elemSize(w.type)));
    } else {
      if (w.shape.size() != 2 && w.shape.size() != 3)
        return absl::DataLossError("packed weight '" + w.name +
                                   "' is not [N, K] or [E, N, K]");
      kernels::WeightFormat format = kernels::WeightFormat::F32;
      if (w.layout == WeightLayout::PackedI8)
        format = kernels::WeightFormat::I8;
      else if (w.layout == WeightLayout::PackedI4)
        format = kernels::WeightFormat::I4;
      else if (w.layout == WeightLayout::PackedI4H)
        format = kernels::WeightFormat::I4H;
      else if (w.layout == WeightLayout::PackedF8)
        format = kernels::WeightFormat::F8;
      else if (w.layout == WeightLayout::PackedI8Dot)
        format = kernels::WeightFormat::I8Dot;
      else if (w.layout == WeightLayout::PackedI4Dot)
        format = kernels::WeightFormat::I4Dot;
      else if (w.layout == WeightLayout::PackedS24)
        format = kernels::WeightFormat::S24;
      else if (w.layout == WeightLayout::PackedBF16)
        format = kernels::WeightFormat::BF16;
      else if (w.layout == WeightLayout::PackedF16)
        format = kernels::WeightFormat::F16;
      bool grouped = format == kernels::WeightFormat::I4 ||
                     format == kernels::WeightFormat::I4H ||
                     format == kernels::WeightFormat::I4Dot ||
                     format == kernels::WeightFormat::F8;
      if (grouped != (w.group > 0))
        return absl::DataLossError("packed weight '" + w.name +
                                   "' has a bad K group");
      int64_t experts = w.shape.size() == 3 ? w.shape[0] : 1;
      int64_t n = w.shape[w.shape.size() - 2], k = w.shape.back();
      // W4A8's groups are whole vpdpbusd pairs and divide K.
      if (format == kernels::WeightFormat::I4Dot &&
          (w.group % 8 != 0 || k % w.group != 0))
        return absl::DataLossError("packed weight '" + w.name + "' has K " +
                                   std::to_string(k) + " and group " +
                                   std::to_string(w.group) +
                                   ": int4-vnni needs a multiple of 8 that "
                                   "divides K");
      uint64_t one =
          (kernels::packedWeightBytes(format, n, k, w.group) + 63) & ~63ULL;
      if (w.bytes != one * experts)
        return absl::DataLossError("packed weight '" + w.name +
                                   "' has the wrong size");
      for (int64_t e = 0; e < experts; ++e)
        views.push_back({format, n, k, data + e * one, w.group});
    }
    packedViews.push_back(std::move(views));
  }
  for (const FunctionPlan &f : plan_.functions)
    for (const Step &s : f.steps) {
      if ((s.op() != OpCode::Elementwise && s.op() != OpCode::Generated) ||
          kernels_.count(s.kernel))
        continue;
      void *sym = resolve ? resolve(s.kernel) : nullptr;
      if (!sym)
        return absl::NotFoundError("generated kernel '" + s.kernel + "' (for " +
                                   s.location + ") is not in the code");
      kernels_[s.kernel] = reinterpret_cast<Kernel>(sym);
    }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Model>>
Model::fromParts(ModelPlan plan, const uint8_t *weights, size_t weightsSize,
                 SymbolResolver resolve, std::shared_ptr<void> keep) {
  if (reinterpret_cast<uintptr_t>(weights) % 64 != 0)
    return absl::InvalidArgumentError(
        "the weights section must be 64-byte aligned");
  std::shared_ptr<Model> m(new Model());
  m->plan_ = std::move(plan);
  m->weightsBase = weights;
  m->weightsSize = weightsSize;
  m->keep = std::move(keep);
  if (absl::Status s = m->bind(std::move(resolve)); !s.ok())
    return s;
  return m;
}

std::vector<std::string> missingIsa(const std::vector<std::string> &required) {
  std::vector<std::string> missing;
  // DS_CPU_AVX2 makes this CPU an AVX2 one for the loader too.
  auto forcedOff = [](const std::string &r) {
    return avx2Forced() && (r.rfind("avx512", 0) == 0 ||
                            r.rfind("amx", 0) == 0 || r.rfind("avx10", 0) == 0);
  };
  for (const std::string &r : required)
    if (!cpuInfo().has(r) || forcedOff(r))
      missing.push_back(r);
  return missing;
}

absl::StatusOr<std::shared_ptr<Model>> Model::load(const std::string &path,
                                                   const LoadOptions &options) {
  // The type first: opening a FIFO would block until a writer comes.
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    return absl::NotFoundError("cannot open artifact " + path + ": " +
                               std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(path + " is not a regular file");
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    return absl::NotFoundError("cannot open artifact " + path + ": " +
                               std::strerror(errno));
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(path + " is not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 24) {
    close(fd);
    return absl::DataLossError(
        path + ": not a ds artifact (too short for the header)");
  }
  void *map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED)
    return absl::UnavailableError("cannot map " + path);
  absl::StatusOr<std::shared_ptr<Model>> m =
      parse(static_cast<const uint8_t *>(map), size, path, options);
  if (!m.ok()) {
    munmap(map, size);
    return m.status();
  }
  (*m)->mapping = map;
  (*m)->mappingSize = size;
  return m;
}

absl::StatusOr<std::shared_ptr<Model>>
Model::parse(const uint8_t *bytes, size_t size, const std::string &path,
             const LoadOptions &options) {
  auto fail = [&](const std::string &what) {
    return absl::DataLossError(path + ": " + what);
  };
  if (size < 24)
    return fail("not a ds artifact (too short for the header)");
  std::shared_ptr<Model> m(new Model());
  if (std::memcmp(bytes, "DSARTIF1", 8) != 0)
    return fail("not a ds artifact (bad magic)");
  uint64_t len, sum;
  std::memcpy(&len, bytes + 8, 8);
  std::memcpy(&sum, bytes + 16, 8);
  if (len > size - 24)
    return fail("truncated: the header runs past the end of the file");
  std::string header(reinterpret_cast<const char *>(bytes + 24), len);
  if (options.verifyChecksums && fnv1a(header.data(), header.size()) != sum)
    return fail("corrupted: header checksum mismatch");
  TargetInfo target;
  absl::StatusOr<ModelPlan> plan = planFromJson(header, &target);
  if (!plan.ok())
    return fail(std::string(plan.status().message()));
  json j = json::parse(header, nullptr, false);
  const json &x = j["extra"];
  auto num = [&](const char *key) -> uint64_t {
    return x.contains(key) && x[key].is_number_unsigned()
               ? x[key].get<uint64_t>()
               : ~uint64_t{0};
  };
  uint64_t codeOff = num("code_offset"), codeBytes = num("code_bytes");
  uint64_t wOff = num("weights_offset"), wBytes = num("weights_bytes");
  if (codeOff > size || codeBytes > size - codeOff || wOff > size ||
      wBytes > size - wOff)
    return fail("truncated: sections run past the end of the file");
  if (options.verifyChecksums &&
      fnv1a(bytes + codeOff, codeBytes) != num("code_checksum"))
    return fail("corrupted: code checksum mismatch");
  if (options.verifyChecksums &&
      fnv1a(bytes + wOff, wBytes) != num("weights_checksum"))
    return fail("corrupted: weights checksum mismatch");
  if (std::vector<std::string> missing = missingIsa(target.requiredIsa);
      !missing.empty())
    return absl::UnavailableError(
        absl::StrCat(path, ": compiled for a CPU with ",
                     absl::StrJoin(target.requiredIsa, " "), "; this CPU (",
                     cpuInfo().model, ") lacks ", absl::StrJoin(missing, " ")));
  m->target_ = target;
  m->plan_ = std::move(*plan);
  m->weightsBase = bytes + wOff;
  m->weightsSize = wBytes;
  // The code: an ELF shared object, loaded from an anonymous file.
  if (codeBytes > 0 && options.loadCode) {
    int mfd = memfd_create("ds-kernels", MFD_CLOEXEC);
    if (mfd < 0)
      return absl::UnavailableError("memfd_create failed");
    const uint8_t *p = bytes + codeOff;
    uint64_t left = codeBytes;
    while (left > 0) {
      ssize_t n = write(mfd, p, left);
      if (n <= 0) {
        close(mfd);
        return absl::UnavailableError("cannot stage the artifact's code");
      }
      p += n;
      left -= static_cast<uint64_t>(n);
    }
    std::string fdPath = "/proc/self/fd/" + std::to_string(mfd);
    m->library = dlopen(fdPath.c_str(), RTLD_NOW | RTLD_LOCAL);
    close(mfd);
    if (!m->library) {
      const char *err = dlerror();
      return fail(std::string("the code section does not load: ") +
                  (err ? err : "unknown error"));
    }
  }
  void *lib = m->library;
  SymbolResolver resolve = [lib](const std::string &sym) -> void * {
    return lib ? dlsym(lib, sym.c_str()) : nullptr;
  };
  if (!options.loadCode && options.resolve)
    resolve = options.resolve;
  if (absl::Status s = m->bind(resolve); !s.ok())
    return fail(std::string(s.message()));
  return m;
}

} // namespace ds::rt
