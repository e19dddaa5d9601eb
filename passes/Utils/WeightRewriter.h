//===- WeightRewriter.h - compile-time weight transformations ----*- C++
//-*-===//
//
// What ds-quantize and ds-sparsify-24 share: which GEMM weights a pass
// targets (allow list of categories, deny list of name regexes), their values
// read from the checkpoint (a ds.param or a tensor.concat of them), new
// ds.params for the transformed weights (one set of tensors per distinct
// weight and type, shared by @prefill and @decode), and the safetensors file
// the new tensors go to, recorded in the module's `ds.weight_files`.
//
//===----------------------------------------------------------------------===//

#ifndef DS_PASSES_UTILS_WEIGHTREWRITER_H
#define DS_PASSES_UTILS_WEIGHTREWRITER_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/weights/Weights.h"

#include "ds/support/Progress.h"

#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Regex.h"

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <set>

namespace ds {

/// The role of a GEMM weight, for allow lists.
enum class WeightCategory { Linear, Experts, LmHead, Router };
StringRef weightCategoryName(WeightCategory c);

/// The weight operands of a GEMM-like op (ds.linear, ds.fused_linear,
/// ds.fused_router, ds.grouped_matmul, ds.fused_moe, ds.moe, and the
/// absorbed kv_b projection of ds.mla_attention) with their
/// categories: stacked experts are `experts`, a GEMM feeding a ds.router or
/// a ds.fused_router's weight `router`, a GEMM whose result the function
/// returns `lm_head`, the rest (attention, dense MLPs, shared experts)
/// `linear`. Biases are not included.
SmallVector<std::pair<OpOperand *, WeightCategory>>
getGemmWeights(Operation *op);

/// Names of the tensors behind one new ds.param: values, then (optional)
/// scales, zero points and sparsity metadata.
struct NewParamNames {
  std::string values, scales, zeroPoints, meta;
};

/// Where an encoder's tensors go: added whole, or reserved and then written
/// in parts (from any thread) as the encoder goes through the weight. A
/// large weight's parts go straight to the output file; a small one's are
/// buffered so that weights encoded in parallel reach the file in order.
class EncodedSink {
public:
  LogicalResult add(ds::TensorToWrite t);
  /// A tensor to be written in parts; its index for write().
  FailureOr<size_t> reserve(const std::string &name, ds::DType dtype,
                            const std::vector<int64_t> &shape);
  /// `size` bytes at byte `offset` of reserved tensor `index`.
  LogicalResult write(size_t index, uint64_t offset, const void *data,
                      uint64_t size);

private:
  friend class WeightRewriter;
  explicit EncodedSink(ds::SafeTensorsWriter *direct) : direct(direct) {}
  /// Writing to the file as it goes, or (null) buffering.
  ds::SafeTensorsWriter *direct;
  /// Buffered tensors, or the direct writer's indices of reserved ones.
  std::vector<ds::TensorToWrite> buffered;
  std::vector<size_t> reserved;
  std::string error;
};

class WeightRewriter {
public:
  /// Parses the allow list (`targets`, or `defaults` when empty) and the deny
  /// list, and opens `weightsPath` plus the module's ds.weight_files. Errors
  /// are reported at the module, prefixed with `passName`.
  LogicalResult init(ModuleOp module, StringRef passName,
                     ArrayRef<std::string> targets,
                     ArrayRef<std::string> defaults,
                     ArrayRef<std::string> exclude, StringRef weightsPath,
                     StringRef outputPath);

  bool isTargeted(WeightCategory c) const {
    return targets.contains(weightCategoryName(c));
  }

  /// The sources of `weight` if it is to be rewritten: targeted, a float
  /// tensor built from ds.params (warns at `user` otherwise), and no source
  /// name matches the deny list.
  std::optional<WeightSources> select(Operation *user, Value weight,
                                      WeightCategory c);

  /// Returns a new ds.param of `type` naming the tensors `encode` makes from
  /// the weight's values, placed before `user`. The values are computed once
  /// per (names.values, type), later: finish() encodes every weight, small
  /// ones in parallel over the context's threads, so `encode` must own what
  /// it uses (capture by value) and be safe to run on another thread; it
  /// reads the values from the reader (in slices, in parallel, for a large
  /// weight) and gives the sink its tensors in a fixed order.
  using Encoder =
      std::function<LogicalResult(const WeightReader &, EncodedSink &)>;
  FailureOr<Value> materialize(Operation *user, Value weight,
                               const WeightSources &sources, Type type,
                               const NewParamNames &names, Encoder encode);

  /// Erases the params and concats nothing uses any more, writes the new
  /// tensors (if any) to the output file and lists it in ds.weight_files.
  /// The new tensors are computed here, before the old params go.
  LogicalResult finish(ModuleOp module);

private:
  std::string passName;
  std::string outputPath;
  llvm::StringSet<> targets;
  std::vector<llvm::Regex> excludes;
  std::unique_ptr<ds::Checkpoint> checkpoint;
  std::unique_ptr<CheckpointWeights> loader;
  /// One weight to compute: its sources and how to encode them.
  struct Job {
    WeightSources sources;
    Encoder encode;
  };
  std::vector<Job> jobs;
  std::set<std::string> done;
  /// Weights rewritten so far, of the module's params.
  std::unique_ptr<ds::Progress> progress;
};

/// A weight name without `*` (a materialized stacked weight is one tensor).
std::string stacklessName(std::string name);

} // namespace ds

#endif // DS_PASSES_UTILS_WEIGHTREWRITER_H
