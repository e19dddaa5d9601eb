//===- Compiler.cpp - ds modules to runnable CPU code ---------------------===//

#include "ds/codegen/Compiler.h"
#include "ds/codegen/CPU/KernelGen.h"
#include "ds/codegen/CPU/PlanBuilder.h"
#include "ds/passes/Passes.h"

#include "mlir/IR/OwningOpRef.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

using namespace mlir;
using namespace ds;
namespace rt = ds::rt;

namespace {
/// The module codegen lowers: a copy through ds-prepare-codegen (every
/// elementwise op, fused or not, as a ds.fused_elementwise).
FailureOr<OwningOpRef<ModuleOp>> prepare(ModuleOp module, TimingScope *timing) {
  OwningOpRef<ModuleOp> copy(module.clone());
  PassManager pm(module.getContext());
  pm.addPass(createPrepareCodegenPass());
  TimingScope prepareTimer =
      timing ? timing->nest("prepare for codegen") : TimingScope();
  if (timing)
    pm.enableTiming(prepareTimer);
  if (failed(pm.run(*copy)))
    return failure();
  return copy;
}

struct Built {
  OwningOpRef<ModuleOp> prepared;
  std::unique_ptr<KernelModule> kernels;
  PlanBuildResult result;
};

/// A nested timer of `parent` (or none).
TimingScope nested(TimingScope *parent, StringRef name) {
  return parent ? parent->nest(name) : TimingScope();
}

FailureOr<Built> build(ModuleOp module, const ds::Checkpoint &checkpoint,
                       TimingScope *timing, int64_t process = 0) {
  Built b;
  FailureOr<OwningOpRef<ModuleOp>> prepared = prepare(module, timing);
  if (failed(prepared))
    return failure();
  b.prepared = std::move(*prepared);
  b.kernels = std::make_unique<KernelModule>(module.getContext());
  {
    TimingScope t = nested(timing, "plan, kernels and packed weights");
    FailureOr<PlanBuildResult> r =
        buildPlan(*b.prepared, checkpoint, *b.kernels, {}, process);
    if (failed(r))
      return failure();
    b.result = std::move(*r);
  }
  TimingScope t = nested(timing, "kernels to LLVM IR");
  if (failed(b.kernels->lowerToLLVM()))
    return module.emitError("lowering the generated kernels failed");
  return b;
}
} // namespace

FailureOr<CompiledArtifact> ds::compileModule(ModuleOp module,
                                              const ds::Checkpoint &checkpoint,
                                              TimingScope *timing,
                                              int64_t process) {
  FailureOr<Built> b = build(module, checkpoint, timing, process);
  if (failed(b))
    return failure();
  CompiledArtifact a;
  a.plan = std::move(b->result.plan);
  a.weights = std::move(b->result.weights);
  a.target = hostTarget();
  if (!b->kernels->empty()) {
    TimingScope t = nested(timing, "kernels to a shared object");
    std::string error;
    if (failed(emitSharedObject(b->kernels->module(), a.code, error)))
      return module.emitError(error);
  }
  return a;
}

FailureOr<std::shared_ptr<rt::Model>>
ds::jitModule(ModuleOp module, const ds::Checkpoint &checkpoint,
              int64_t process) {
  FailureOr<Built> b = build(module, checkpoint, nullptr, process);
  if (failed(b))
    return failure();
  std::shared_ptr<ExecutionEngine> engine;
  if (!b->kernels->empty()) {
    std::string error;
    auto jit = jitKernels(b->kernels->module(), error);
    if (failed(jit))
      return module.emitError(error);
    engine = std::move(*jit);
  }
  ExecutionEngine *e = engine.get();
  // The weights are used where the spool's file is mapped (page cache,
  // not a copy in the heap).
  absl::StatusOr<std::shared_ptr<const uint8_t>> weights =
      b->result.weights.map();
  if (!weights.ok())
    return module.emitError(std::string(weights.status().message()));
  struct Keep {
    std::shared_ptr<ExecutionEngine> engine;
    std::shared_ptr<const uint8_t> weights;
  };
  const uint8_t *base = weights->get();
  const size_t size = b->result.weights.size();
  auto model = rt::Model::fromParts(
      std::move(b->result.plan), base, size,
      [e](const std::string &sym) -> void * {
        if (!e)
          return nullptr;
        auto f = e->lookup(sym);
        if (!f) {
          llvm::consumeError(f.takeError());
          return nullptr;
        }
        return *f;
      },
      std::make_shared<Keep>(Keep{std::move(engine), std::move(*weights)}));
  if (!model.ok())
    return module.emitError(std::string(model.status().message()));
  return *model;
}

//===----------------------------------------------------------------------===//
// From files, through the cache
//===----------------------------------------------------------------------===//

#include "ds/dialects/InitAllDialects.h"
#include "ds/frontends/HF/Importer.h"
#include "ds/passes/Pipelines/Pipelines.h"
#include "ds/runtime.h"
#include "ds/weights/Weights.h"

#include "ds/support/SafeTensors.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/WithColor.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

LoadedModule::~LoadedModule() {
  for (const std::string &f : temporaries)
    llvm::sys::fs::remove(f);
}

FailureOr<std::unique_ptr<LoadedModule>>
ds::loadForCompile(MLIRContext &context, const std::string &path,
                   const std::string &weights, const CompileOptions &options) {
  auto out = std::make_unique<LoadedModule>();
  std::string weightsPath = weights;
  Location loc = FileLineColLoc::get(&context, path, 0, 0);
  TimingScope importTimer = nested(options.timing, "import or parse");
  if (llvm::sys::fs::is_directory(path)) {
    hf::ImportOptions importOptions;
    importOptions.maxCacheLen = options.maxCacheLen;
    out->module = hf::importModelDirectory(context, path, importOptions);
    if (!out->module)
      return failure();
    if (weightsPath.empty())
      weightsPath = path;
  } else {
    out->module = parseSourceFile<ModuleOp>(path, &context);
    if (!out->module)
      return failure();
  }
  importTimer.stop();
  if (!options.noOptimize) {
    std::string text = options.optimize;
    // Passes that write weights (quantization, 2:4 sparsity) get temporary
    // files, deleted once the artifact holds the packed weights.
    auto has = [&](const std::string &key) {
      return text.find(key) == 0 || text.find(" " + key) != std::string::npos;
    };
    bool quantizes = has("quantize=") && !has("quantize=none");
    bool sparsifies = has("sparsity=") && !has("sparsity=none");
    auto temporary = [&](const std::string &option) -> LogicalResult {
      if (has(option + "="))
        return success();
      llvm::SmallString<128> tmp;
      if (llvm::sys::fs::createTemporaryFile("ds-" + option, "safetensors",
                                             tmp))
        return emitError(loc, "cannot create a temporary weights file");
      out->temporaries.push_back(tmp.str().str());
      text += " " + option + "=" + tmp.str().str();
      return success();
    };
    if (quantizes && failed(temporary("quantized-weights")))
      return failure();
    if (sparsifies && failed(temporary("sparse-weights")))
      return failure();
    if ((quantizes || sparsifies) && !has("weights=") && !weightsPath.empty())
      text += " weights=" + weightsPath;
    auto parsed = OptimizeOptions::createFromString(text);
    if (!parsed)
      return emitError(loc, "bad ds-optimize options: ") << options.optimize;
    PassManager pm(&context);
    TimingScope optimizeTimer = nested(options.timing, "ds-optimize");
    if (options.timing)
      pm.enableTiming(optimizeTimer);
    if (failed(buildOptimizePipeline(pm, *parsed, [&](const Twine &msg) {
          return emitError(loc, msg);
        })))
      return failure();
    if (failed(pm.run(*out->module)))
      return failure();
  }
  std::string error;
  auto checkpoint = openModuleCheckpoint(*out->module, weightsPath, error);
  if (failed(checkpoint))
    return emitError(loc, error);
  out->checkpoint = std::move(*checkpoint);
  return out;
}

namespace {
/// Content hashes of checkpoint data, remembered per file version in the
/// cache directory's checksums.json: a file is hashed again when its size,
/// modification time, change time (which no user can set back) or inode
/// differ from what was recorded.
class DataHashes {
public:
  explicit DataHashes(std::string dir) : dir(std::move(dir)) {
    if (this->dir.empty())
      return;
    auto buffer = llvm::MemoryBuffer::getFile(this->dir + "/checksums.json");
    if (!buffer)
      return;
    llvm::Expected<llvm::json::Value> v =
        llvm::json::parse((*buffer)->getBuffer());
    if (!v) {
      llvm::consumeError(v.takeError());
      return;
    }
    if (const llvm::json::Object *o = v->getAsObject())
      for (const auto &[file, entry] : *o)
        if (const llvm::json::Object *e = entry.getAsObject())
          if (auto version = e->getString("version"))
            if (auto hash = e->getString("hash"))
              known[file.str()] = {version->str(), hash->str()};
  }

  /// The data hash of `file` (a safetensors file), from the record if the
  /// file is unchanged, else computed now.
  std::string hash(const std::string &file) {
    struct stat st;
    if (stat(file.c_str(), &st) != 0)
      return "unreadable";
    std::string version =
        std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
        std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) +
        "." + std::to_string(st.st_mtim.tv_nsec) + ":" +
        std::to_string(st.st_ctim.tv_sec) + "." +
        std::to_string(st.st_ctim.tv_nsec);
    auto it = known.find(file);
    if (it != known.end() && it->second.first == version)
      return it->second.second;
    // Streamed in 64 MiB pieces: memory stays bounded for any file size.
    uint64_t h = 0xcbf29ce484222325ULL;
    std::ifstream in(file, std::ios::binary);
    std::vector<char> piece(64 << 20);
    while (in) {
      in.read(piece.data(), piece.size());
      h = rt::fnv1a(piece.data(), static_cast<size_t>(in.gcount()), h);
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    known[file] = {version, hex};
    changed = true;
    return hex;
  }

  /// Records new hashes (best effort: a read-only cache just hashes again).
  void save() {
    if (!changed || dir.empty())
      return;
    llvm::json::Object o;
    for (const auto &[file, entry] : known)
      o[file] =
          llvm::json::Object{{"version", entry.first}, {"hash", entry.second}};
    std::string text;
    llvm::raw_string_ostream os(text);
    os << llvm::json::Value(std::move(o));
    (void)ds::writeFileAtomically(dir + "/checksums.json", text);
  }

private:
  std::string dir;
  std::map<std::string, std::pair<std::string, std::string>> known;
  bool changed = false;
};

/// What the cache key covers for a path: the contents of small files
/// (config, IR, index), every safetensors file's header and data hash.
void hashPath(const std::string &given, uint64_t &h, DataHashes &hashes) {
  auto mix = [&](const std::string &s) {
    h = rt::fnv1a(s.data(), s.size(), h);
  };
  // The same files under another spelling of the path are the same entry.
  llvm::SmallString<256> real;
  std::string path =
      llvm::sys::fs::real_path(given, real) ? given : real.str().str();
  llvm::sys::fs::file_status st;
  std::vector<std::string> files;
  if (llvm::sys::fs::is_directory(path)) {
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(path, ec), end; it != end && !ec;
         it.increment(ec))
      files.push_back(it->path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  for (const std::string &f : files) {
    mix(llvm::sys::path::filename(f).str());
    if (llvm::sys::fs::status(f, st) || !llvm::sys::fs::is_regular_file(st))
      continue;
    if (llvm::StringRef(f).ends_with(".safetensors")) {
      mix(std::to_string(st.getSize()));
      mix(hashes.hash(f));
    } else if (st.getSize() < (64u << 20)) {
      std::ifstream in(f, std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      mix(ss.str());
    } else {
      mix(std::to_string(st.getSize()));
    }
  }
}

std::string cacheDirectory(const CompileOptions &options) {
  if (!options.cacheDir.empty())
    return options.cacheDir;
  if (const char *env = std::getenv("DS_CACHE_DIR"))
    return env;
  if (const char *home = std::getenv("HOME"))
    return std::string(home) + "/.cache/ds";
  return "";
}
} // namespace

namespace {
/// The build of the compiler that would make the artifact: the file this
/// code was loaded from (libDSCodegen.so or an executable linking it), its
/// size and modification time. A rebuilt ds (same version number, other
/// passes or packing) then misses the entries an older build wrote.
std::string compilerIdentity() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void *>(&ds::compileModule), &info) ||
      !info.dli_fname)
    return "unknown-build";
  struct stat st;
  if (stat(info.dli_fname, &st) != 0)
    return info.dli_fname;
  return std::string(info.dli_fname) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}
} // namespace

const char *ds::cacheOutcomeName(CacheOutcome outcome) {
  switch (outcome) {
  case CacheOutcome::Hit:
    return "hit";
  case CacheOutcome::Miss:
    return "miss, compiled";
  case CacheOutcome::Rebuilt:
    return "corrupt entry rebuilt";
  case CacheOutcome::Uncached:
    return "not cached";
  }
  return "unknown";
}

absl::StatusOr<std::shared_ptr<rt::Model>>
ds::compileCached(const std::string &path, const std::string &weights,
                  const CompileOptions &options, CacheOutcome *outcome) {
  CacheOutcome result = CacheOutcome::Miss;
  auto report = [&](CacheOutcome o) {
    if (outcome)
      *outcome = o;
  };
  std::string dir = cacheDirectory(options);
  bool cached = !dir.empty() && dir != "off";
  rt::TargetInfo target = hostTarget();
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&](const std::string &s) {
    h = rt::fnv1a(s.data(), s.size(), h);
  };
  mix(std::string("ds-artifact-v") +
      std::to_string(rt::kArtifactFormatVersion) + ":" + ds_version_string());
  mix(compilerIdentity());
  mix(target.triple + target.cpu + target.features);
  mix(options.optimize + (options.noOptimize ? ":raw" : ":opt") + ":" +
      std::to_string(options.maxCacheLen));
  DataHashes hashes(cached ? dir : "");
  hashPath(path, h, hashes);
  if (!weights.empty())
    hashPath(weights, h, hashes);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  std::string key = hex, entry;
  if (cached) {
    entry = dir + "/" + key + ".dsa";
    if (llvm::sys::fs::exists(entry)) {
      auto model = rt::Model::load(entry);
      if (model.ok() && (*model)->plan().buildKey == key) {
        report(CacheOutcome::Hit);
        return model;
      }
      // Corrupted, truncated, stale or another build's: rebuild it.
      llvm::sys::fs::remove(entry);
      result = CacheOutcome::Rebuilt;
    }
  }
  DialectRegistry registry;
  ds::registerAllDialects(registry);
  MLIRContext context(registry);
  std::string diagnostics;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
    llvm::raw_string_ostream os(diagnostics);
    os << d.getLocation() << ": " << d << "\n";
    return success();
  });
  auto loaded = loadForCompile(context, path, weights, options);
  if (failed(loaded))
    return absl::InvalidArgumentError(diagnostics);
  auto jit = [&]() -> absl::StatusOr<std::shared_ptr<rt::Model>> {
    report(CacheOutcome::Uncached);
    auto model = jitModule(*(*loaded)->module, *(*loaded)->checkpoint);
    if (failed(model))
      return absl::InvalidArgumentError(diagnostics);
    return *model;
  };
  if (!cached)
    return jit();
  auto artifact = compileModule(*(*loaded)->module, *(*loaded)->checkpoint);
  if (failed(artifact))
    return absl::InvalidArgumentError(diagnostics);
  artifact->plan.buildKey = key;
  absl::Status written = absl::OkStatus();
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    written = absl::UnavailableError(ec.message());
  if (written.ok())
    written = rt::writeArtifact(
        entry, artifact->plan, artifact->target, artifact->code,
        rt::WeightsFile{artifact->weights.fd(), artifact->weights.size()});
  if (!written.ok()) {
    llvm::WithColor::warning(llvm::errs(), "ds")
        << "cannot write the compile cache " << dir << " ("
        << std::string(written.message()) << "); compiling without it\n";
    return jit();
  }
  hashes.save();
  auto model = rt::Model::load(entry);
  if (model.ok())
    report(result);
  return model;
}

#include "ds/rt/Compile.h"

namespace {
/// Installs compileCached as the runtime's ds_model_compile when this
/// library loads.
struct RegisterCompileHook {
  RegisterCompileHook() {
    rt::setCompileHook([](const std::string &path, const std::string &opt)
                           -> absl::StatusOr<std::shared_ptr<rt::Model>> {
      CompileOptions options;
      options.optimize = opt;
      return compileCached(path, "", options);
    });
  }
} registerCompileHook;
} // namespace
