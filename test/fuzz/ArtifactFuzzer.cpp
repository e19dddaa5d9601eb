//===- ArtifactFuzzer.cpp - libFuzzer target for the artifact loader ------===//
//
// The input is an artifact's header JSON and its payload: the first 4 bytes
// give the header length, the header follows, then the payload (code and
// weights sections, at the offsets the header names). The target wraps them
// in a well-formed container (magic, length, header checksum) so that
// mutations reach the JSON, the plan and weight-table validation and the
// section checks, and loads it with checksums off and no code; anything the
// loader accepts must have a consistent plan (every step's packed weights
// are readable, every cache has its size).
//
//   build/test/fuzz/ds-fuzz-artifact -max_total_time=60 CORPUS_DIR
//
// A corpus entry is made from a real artifact by ds-fuzz-artifact itself:
//   ds-fuzz-artifact --seed-from=m.dsa CORPUS_DIR/seed
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Executor.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {
std::vector<uint8_t> wrap(const uint8_t *data, size_t size) {
  uint32_t len = 0;
  if (size >= 4)
    std::memcpy(&len, data, 4);
  size_t rest = size >= 4 ? size - 4 : 0;
  len = static_cast<uint32_t>(std::min<size_t>(len, rest));
  std::string header(reinterpret_cast<const char *>(data) + 4 * (size >= 4),
                     len);
  std::vector<uint8_t> out(24 + rest);
  std::memcpy(out.data(), "DSARTIF1", 8);
  uint64_t len64 = len, sum = ds::rt::fnv1a(header.data(), header.size());
  std::memcpy(out.data() + 8, &len64, 8);
  std::memcpy(out.data() + 16, &sum, 8);
  if (rest)
    std::memcpy(out.data() + 24, data + 4, rest);
  return out;
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> bytes = wrap(data, size);
  ds::rt::Model::LoadOptions options;
  options.verifyChecksums = false;
  options.loadCode = false;
  auto model =
      ds::rt::Model::parse(bytes.data(), bytes.size(), "fuzz.dsa", options);
  if (!model.ok())
    return 0;
  // Whatever loads must be readable: touch every packed view's first and
  // last byte, and make the caches.
  volatile uint8_t sink = 0;
  const ds::rt::ModelPlan &plan = (*model)->plan();
  for (size_t i = 0; i < plan.weights.size(); ++i) {
    const auto *raw =
        static_cast<const uint8_t *>((*model)->weightData(static_cast<int>(i)));
    if (plan.weights[i].bytes)
      sink = sink + raw[0] + raw[plan.weights[i].bytes - 1];
  }
  auto cache = ds::rt::KVCache::create(plan, 1);
  (void)cache;
  return 0;
}

// --seed-from=FILE.dsa OUT: turns an artifact into a corpus entry.
extern "C" int LLVMFuzzerInitialize(int *argc, char ***argv) {
  for (int i = 1; i + 1 < *argc; ++i) {
    std::string arg = (*argv)[i];
    if (arg.rfind("--seed-from=", 0) != 0)
      continue;
    std::ifstream in(arg.substr(12), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string file = ss.str();
    if (file.size() < 24)
      std::exit(1);
    uint64_t len;
    std::memcpy(&len, file.data() + 8, 8);
    uint32_t len32 = static_cast<uint32_t>(len);
    std::ofstream out((*argv)[i + 1], std::ios::binary);
    out.write(reinterpret_cast<const char *>(&len32), 4);
    out.write(file.data() + 24, file.size() - 24);
    std::exit(out ? 0 : 1);
  }
  return 0;
}
