//===- ds-opt.cpp - the ds optimizer driver -------------------------------===//
//
// mlir-opt for ds: every upstream dialect, pass and extension, plus the ds
// dialect, the ds passes and the ds-test-* passes. All of MlirOptMain's flags
// work, including --load-pass-plugin and --load-dialect-plugin.
//
//===----------------------------------------------------------------------===//

#include "dialects/InitAllDialects.h"
#include "passes/Passes.h"
#include "passes/Pipelines/Pipelines.h"
#include "test/lib/TestPasses.h"

#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::ds::registerAllDialects(registry);
  mlir::registerAllPasses();
  mlir::ds::registerDSPasses();
  mlir::ds::registerDSPipelines();
  mlir::ds::test::registerDSTestPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "ds optimizer driver: MoE transformer graphs\n", registry));
}
