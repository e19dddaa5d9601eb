//===- ArtifactFuzzer.cpp - libFuzzer target for the artifact loader ------===//
//
// The input is an artifact's header JSON and its payload: the first 4 bytes
// give the header length, the header follows, then the payload (code and
// weights sections, at the offsets the header names). The target wraps them
// in a well-formed container (magic, length, header checksum) so that
// mutations reach the JSON, the plan and weight-table validation and the
// section checks, and loads it with checksums off and no code (generated
// kernels are stand-ins that do nothing); anything the loader accepts must
// have a consistent plan (every step's packed weights are readable, every
// cache has its size), and every function then runs on small inputs (every
// dynamic dim 2, two cache slots) to an answer or a clean error: the
// executor's shape checks must stop whatever the kernels cannot take.
//
//   build/test/fuzz/ds-fuzz-artifact -max_total_time=60 CORPUS_DIR
//
// A corpus entry is made from a real artifact by ds-fuzz-artifact itself:
//   ds-fuzz-artifact --seed-from=m.dsa CORPUS_DIR/seed
//
//===----------------------------------------------------------------------===//

#include "ds/rt/Executor.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
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

/// Stands in for every generated kernel: leaves its result as it is.
void noKernel(void **) {}

/// Runs every function of `model` on inputs of its declared ranks and
/// types: static dims as declared, dynamic ones 2, ids 1.
void runFunctions(const std::shared_ptr<ds::rt::Model> &model) {
  const ds::rt::ModelPlan &plan = model->plan();
  auto cache = ds::rt::KVCache::create(plan, 2);
  if (!cache.ok())
    return;
  ds::rt::Executor exec(model);
  exec.setMemoryLimit(uint64_t{256} << 20);
  for (const ds::rt::FunctionPlan &fn : plan.functions) {
    std::vector<ds::HostTensor> inputs;
    bool ok = true;
    for (int32_t v : fn.inputs) {
      if (v < 0 || v >= static_cast<int32_t>(fn.values.size())) {
        ok = false;
        break;
      }
      const ds::rt::ValueInfo &info = fn.values[v];
      std::vector<int64_t> shape;
      int64_t count = 1;
      for (const ds::rt::DimExpr &d : info.shape) {
        int64_t n = d.factors.empty() ? d.constant : 2;
        if (n < 0 || n > 4096 || count * std::max<int64_t>(n, 1) > (1 << 16)) {
          ok = false;
          break;
        }
        count *= std::max<int64_t>(n, 1);
        shape.push_back(n);
      }
      if (!ok)
        break;
      bool ints = info.type != ds::rt::ElemType::F32;
      ds::HostTensor t(ints ? ds::DType::I64 : ds::DType::F32, shape);
      for (int64_t i = 0; i < t.numElements(); ++i) {
        if (ints)
          t.data<int64_t>()[i] = 1;
        else
          t.data<float>()[i] = 0.5f;
      }
      inputs.push_back(std::move(t));
    }
    if (!ok)
      continue;
    std::vector<const ds::HostTensor *> args;
    for (const ds::HostTensor &t : inputs)
      args.push_back(&t);
    auto r = exec.run(fn.name, args, &*cache, {0, 1});
    if (std::getenv("DS_FUZZ_VERBOSE"))
      std::fprintf(stderr, "%s: %s\n", fn.name.c_str(),
                   r.ok() ? "ran" : std::string(r.status().message()).c_str());
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<uint8_t> bytes = wrap(data, size);
  ds::rt::Model::LoadOptions options;
  options.verifyChecksums = false;
  options.loadCode = false;
  options.resolve = [](const std::string &) {
    return reinterpret_cast<void *>(&noKernel);
  };
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
  runFunctions(*model);
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
