//===- ds-opt.cpp - the ds optimizer driver -------------------------------===//
//
// mlir-opt for ds: every upstream dialect, pass and extension, plus the ds
// dialect, the ds passes and the ds-test-* passes. All of MlirOptMain's flags
// work, including --load-pass-plugin and --load-dialect-plugin.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/Transforms/ShardingInterfaceImpl.h"
#include "ds/dialects/InitAllDialects.h"
#include "ds/passes/Passes.h"
#include "ds/passes/Pipelines/Pipelines.h"
#include "ds/test/lib/TestPasses.h"
#include "ds/tools/OutOfMemory.h"

#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  static const ds::tools::OutOfMemoryMessage oom{
      "ds-opt", "the machine, or a limit on this process (ulimit -d / -v, a "
                "cgroup), allows less than this step needs"};
  ds::tools::exitOnOutOfMemory(oom);
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  ds::registerAllDialects(registry);
  ds::registerShardingInterfaceExternalModels(registry);
  mlir::registerAllPasses();
  ds::registerDSPasses();
  ds::registerDSPipelines();
  ds::test::registerDSTestPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "ds optimizer driver: MoE transformer graphs\n", registry));
}
