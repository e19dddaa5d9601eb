//===- KernelGen.h - generated CPU kernels: MLIR -> LLVM -> code -*- C++
//-*-===//
//
// Kernels the compiler generates rather than calls: every ds.fused_elementwise
// becomes a linalg.generic over memrefs (broadcast inputs get constant
// indexing maps) and ds.rms_norm a reduction generic and a scaling generic;
// lowered through loops to the LLVM dialect with math functions as polynomials
// (so LLVM vectorizes them), optimized at O3 for the host CPU, and then either
// JIT-compiled in process with ORC (mlir::ExecutionEngine) or emitted as
// position-independent code linked into a shared object that the runtime loads
// without LLVM.
//
// Every kernel has the ABI `void ds_kernel_<name>(void **descriptors)`: one
// pointer per operand (inputs, then the output) to a memref descriptor in
// MLIR's C layout {allocated, aligned, offset, sizes[r], strides[r]}.
//
//===----------------------------------------------------------------------===//

#ifndef DS_CODEGEN_CPU_KERNELGEN_H
#define DS_CODEGEN_CPU_KERNELGEN_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/rt/Plan.h"

#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringMap.h"

#include <memory>
#include <string>

namespace ds {
class FusedElementwiseOp;
class RMSNormOp;

/// Collects kernels into one module.
class KernelModule {
public:
  explicit KernelModule(MLIRContext *ctx);
  /// Adds the kernel for `op`; returns the symbol the runtime calls.
  FailureOr<std::string> addElementwise(FusedElementwiseOp op);
  /// RMSNorm as two linalg.generics: the sum of squares of each row (a
  /// reduction, in f64 as the reference interpreter sums), then
  /// w * x * rsqrt(mean + eps). Operands: x, the weight, y.
  FailureOr<std::string> addRMSNorm(RMSNormOp op);
  bool empty() const { return count == 0; }
  ModuleOp module() { return *mod; }

  /// Lowers the module to the LLVM dialect (in place) and adds the
  /// ds_kernel_* entry points.
  LogicalResult lowerToLLVM();

private:
  FailureOr<std::string> buildElementwise(FusedElementwiseOp op);
  FailureOr<std::string> buildRMSNorm(RMSNormOp op);

  OwningOpRef<ModuleOp> mod;
  int count = 0;
  /// Structurally equal ops share one kernel (key: types, attributes and the
  /// body's dataflow).
  llvm::StringMap<std::string> dedup;
};

/// The host the code is generated for (LLVM's host CPU name and features).
ds::rt::TargetInfo hostTarget();

/// Compiles a lowered kernel module at O3 for the host into a shared object
/// (bytes of an ELF .so), or fails with `error` set.
LogicalResult emitSharedObject(ModuleOp lowered, std::string &sharedObject,
                               std::string &error);

/// JIT-compiles a lowered kernel module in process with ORC.
FailureOr<std::unique_ptr<ExecutionEngine>> jitKernels(ModuleOp lowered,
                                                       std::string &error);

} // namespace ds

#endif // DS_CODEGEN_CPU_KERNELGEN_H
