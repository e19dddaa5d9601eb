//===- Compiler.h - ds modules to runnable CPU code ---------------*- C++
//-*-===//
//
// The compiler's entry points: an optimized ds module (plus its checkpoint)
// becomes an execution plan, packed weights and generated kernels, either
// JIT-compiled into this process (ORC, through mlir::ExecutionEngine) as a
// runtime Model, or written as an artifact file that the compiler-free
// runtime loads. `compileCached` does the whole path from a model directory
// or .mlir file, through a persistent on-disk cache.
//
//===----------------------------------------------------------------------===//

#ifndef DS_CODEGEN_COMPILER_H
#define DS_CODEGEN_COMPILER_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/rt/Executor.h"
#include "ds/support/FileSpool.h"
#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/Timing.h"

#include <memory>
#include <string>
#include <vector>

namespace ds {

struct CompiledArtifact {
  ds::rt::ModelPlan plan;
  ds::rt::TargetInfo target;
  std::string code; ///< ELF shared object with the generated kernels
  /// The weights section, in an unlinked temporary file ($TMPDIR): write
  /// it with rt::writeArtifact(..., rt::WeightsFile{weights.fd(),
  /// weights.size()}).
  ds::FileSpool weights;
};

/// Plan + weights + shared object. Errors are emitted as diagnostics.
/// With `timing`, each phase (preparation, plan and weights, lowering the
/// kernels to LLVM, the shared object) is timed as a nested scope
/// (--mlir-timing in ds-compile).
/// A partitioned module (ds-partition) compiles to the plan of process
/// `process`, with its shards of the weights; its collective steps run
/// through the runtime's communicator (rt::setCommunicator).
FailureOr<CompiledArtifact> compileModule(ModuleOp module,
                                          const ds::Checkpoint &checkpoint,
                                          mlir::TimingScope *timing = nullptr,
                                          int64_t process = 0);

/// Plan + weights, kernels JIT-compiled in process (no file, no linker).
FailureOr<std::shared_ptr<ds::rt::Model>>
jitModule(ModuleOp module, const ds::Checkpoint &checkpoint,
          int64_t process = 0);

struct CompileOptions {
  /// ds-optimize options (e.g. "quantize=int8"); applied before codegen
  /// when the input is not optimized already. Empty: ds-optimize defaults.
  std::string optimize;
  /// Skip ds-optimize (the module is optimized already).
  bool noOptimize = false;
  /// Max cache length for imported models.
  int64_t maxCacheLen = 0;
  /// Cache directory ("" = $DS_CACHE_DIR or ~/.cache/ds; "off" disables).
  std::string cacheDir;
  /// loadForCompile times the import or parse and each ds-optimize pass
  /// under this scope, when given.
  mlir::TimingScope *timing = nullptr;
};

/// A module ready for codegen and its weights.
struct LoadedModule {
  OwningOpRef<ModuleOp> module;
  std::unique_ptr<ds::Checkpoint> checkpoint;
  /// Files to delete once compiled (quantized weights written on the way).
  std::vector<std::string> temporaries;
  ~LoadedModule();
};

/// Reads a model directory (imported) or a .mlir file, opens its weights
/// (`weights`, else the module's ds.weight_files / the directory) and runs
/// ds-optimize with `options.optimize` unless `options.noOptimize`.
/// Errors are emitted as diagnostics.
FailureOr<std::unique_ptr<LoadedModule>>
loadForCompile(MLIRContext &context, const std::string &path,
               const std::string &weights, const CompileOptions &options);

/// What compileCached did.
enum class CacheOutcome {
  Hit,      ///< loaded the cached artifact
  Miss,     ///< compiled and stored a new entry
  Rebuilt,  ///< the entry was corrupt or built from other inputs: rebuilt
  Uncached, ///< compiled without the cache (off, or not writable)
};
/// "hit", "miss, compiled", "corrupt entry rebuilt", "not cached".
const char *cacheOutcomeName(CacheOutcome outcome);

/// Compiles a Hugging Face model directory or a .mlir file (weights from
/// `weights`, else its ds.weight_files / the directory) into a Model,
/// reusing a cached artifact keyed by the inputs' content, the options, the
/// host target and the compiler build. Checkpoint data is keyed by content:
/// every safetensors header and a hash of the data, the latter computed once
/// per file version (a file whose size, mtime, ctime or inode changed is
/// hashed again; checksums.json in the cache directory remembers them). The
/// key is stored in the artifact and checked on a hit. A corrupt entry, or
/// one built from other inputs, is rebuilt; an unwritable cache directory
/// warns and compiles without it.
absl::StatusOr<std::shared_ptr<ds::rt::Model>>
compileCached(const std::string &path, const std::string &weights,
              const CompileOptions &options, CacheOutcome *outcome = nullptr);

} // namespace ds

#endif // DS_CODEGEN_COMPILER_H
