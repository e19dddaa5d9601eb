//===- Model.h - a loaded model: plan, weights and generated kernels ------===//
//
// A Model is an artifact in memory: the plan, the weights (memory-mapped from
// the file, or owned when the compiler hands them over in process), and the
// generated kernels (the artifact's shared object loaded from a memfd, or
// function pointers from the compiler's JIT). Loading checks the magic, the
// format version, sizes and checksums, every id of the plan, and that this
// CPU has every instruction-set extension the artifact needs. Immutable once
// loaded; shared by any number of executors on any threads.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_MODEL_H
#define DS_RT_MODEL_H

#include "ds/rt/Kernels.h"
#include "ds/rt/Plan.h"

#include "absl/status/statusor.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ds::rt {

class Model {
public:
  /// Finds a generated kernel by symbol; null when missing.
  using SymbolResolver = std::function<void *(const std::string &)>;

  struct LoadOptions {
    /// Check the header, code and weights checksums (a full pass over the
    /// weights: several GB/s).
    bool verifyChecksums = true;
    /// Load the generated code (off: only the plan and weights, e.g. to
    /// inspect or fuzz an artifact; steps with generated kernels then fail
    /// to bind unless `resolve` provides them).
    bool loadCode = true;
    /// With loadCode off: where generated kernels come from instead (a
    /// host's own build of them, or stand-ins when fuzzing the plan).
    std::function<void *(const std::string &)> resolve;
  };

  /// Loads an artifact file (checks magic, sizes, checksums, the target).
  static absl::StatusOr<std::shared_ptr<Model>>
  load(const std::string &path, const LoadOptions &options);
  static absl::StatusOr<std::shared_ptr<Model>> load(const std::string &path) {
    return load(path, LoadOptions());
  }
  /// The same from bytes in memory, which must outlive the model; `name`
  /// stands in for the path in messages.
  static absl::StatusOr<std::shared_ptr<Model>>
  parse(const uint8_t *bytes, size_t size, const std::string &name,
        const LoadOptions &options);
  /// A model from parts made in this process (the compiler's JIT): the
  /// weights section is `weightsSize` bytes at `weights` (64-byte aligned),
  /// used in place; `keep` owns it and whatever `resolve` returns pointers
  /// into.
  static absl::StatusOr<std::shared_ptr<Model>>
  fromParts(ModelPlan plan, const uint8_t *weights, size_t weightsSize,
            SymbolResolver resolve, std::shared_ptr<void> keep);
  ~Model();

  const ModelPlan &plan() const { return plan_; }
  /// Raw weight bytes of table entry i.
  const void *weightData(int32_t i) const { return weightPtrs[i]; }
  /// GEMM view of a packed weight (one per expert).
  const std::vector<kernels::PackedWeight> &packed(int32_t i) const {
    return packedViews[i];
  }
  /// Generated kernel of a step, resolved at load time.
  using Kernel = void (*)(void **);
  Kernel kernel(const std::string &symbol) const;
  /// The target the code was compiled for.
  const TargetInfo &target() const { return target_; }

private:
  Model() = default;
  absl::Status bind(SymbolResolver resolve);

  ModelPlan plan_;
  TargetInfo target_;
  const uint8_t *weightsBase = nullptr;
  uint64_t weightsSize = 0;
  std::vector<const void *> weightPtrs;
  std::vector<std::vector<kernels::PackedWeight>> packedViews;
  std::map<std::string, Kernel> kernels_;
  void *mapping = nullptr;
  size_t mappingSize = 0;
  void *library = nullptr;
  std::shared_ptr<void> keep;
};

/// The instruction-set extensions of `required` this CPU lacks (empty when
/// it has them all). Names as in TargetInfo::requiredIsa.
std::vector<std::string> missingIsa(const std::vector<std::string> &required);

} // namespace ds::rt

#endif // DS_RT_MODEL_H
