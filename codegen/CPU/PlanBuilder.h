//===- PlanBuilder.h - ds functions to runtime execution plans ---*- C++
//-*-===//
//
// Walks the functions of an optimized ds module and produces the runtime's
// ModelPlan: one step per compute op (a runtime microkernel or a generated
// kernel), reshapes as buffer aliases, shapes as products of run-time dims,
// KV caches recognized from the function signature (an argument whose only
// use is a ds.cache_update, returned updated), and weights evaluated from the
// checkpoint at compile time and packed into the kernels' layouts (int8
// per-channel weights stay int8; other formats are dequantized to f32).
//
//===----------------------------------------------------------------------===//

#ifndef DS_CODEGEN_CPU_PLANBUILDER_H
#define DS_CODEGEN_CPU_PLANBUILDER_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/codegen/CPU/KernelGen.h"
#include "ds/rt/Plan.h"
#include "ds/support/FileSpool.h"
#include "ds/support/SafeTensors.h"

#include "mlir/IR/BuiltinOps.h"

namespace ds {

struct PlanBuildResult {
  ds::rt::ModelPlan plan;
  /// The weights section (entries at plan.weights[i].offset), in an
  /// unlinked temporary file in $TMPDIR.
  ds::FileSpool weights;
};

/// Builds the plan of every function in `module` (or only `functions` when
/// non-empty), adding generated kernels to `kernels`. Errors are emitted at
/// the op that cannot be compiled. A partitioned module (ds-partition)
/// gives the plan of process `process`, with its shards of the weights.
FailureOr<PlanBuildResult> buildPlan(ModuleOp module,
                                     const ds::Checkpoint &checkpoint,
                                     KernelModule &kernels,
                                     ArrayRef<std::string> functions = {},
                                     int64_t process = 0);

} // namespace ds

#endif // DS_CODEGEN_CPU_PLANBUILDER_H
