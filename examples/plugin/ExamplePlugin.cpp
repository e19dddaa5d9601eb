//===- ExamplePlugin.cpp - an example ds pass plugin ----------------------===//
//
// A pass plugin that ds-opt loads with --load-pass-plugin. It links against
// the shared ds dialect library, so isa<ds::MoEOp> works across the plugin
// boundary. Built in-tree for the lit test and out-of-tree against an
// installed ds (find_package(DS)).
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

namespace ds::example {
#define GEN_PASS_DECL
#define GEN_PASS_DEF_EXAMPLEREPORTMOEPASS
#define GEN_PASS_REGISTRATION
#include "ExamplePasses.h.inc"
} // namespace ds::example

using namespace mlir;

namespace {
struct ExampleReportMoEPass
    : public ds::example::impl::ExampleReportMoEPassBase<ExampleReportMoEPass> {
  void runOnOperation() override {
    getOperation()->walk([](Operation *op) {
      ds::RoutingAttr routing;
      if (auto moe = dyn_cast<ds::MoEOp>(op))
        routing = moe.getRouting();
      else if (auto router = dyn_cast<ds::RouterOp>(op))
        routing = router.getRouting();
      else
        return;
      op->emitRemark() << "routes " << routing.getTopK() << " of "
                       << routing.getNumExperts() << " experts ("
                       << ds::stringifyScoringFunc(routing.getScoring()) << ")";
    });
  }
};
} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK ::mlir::PassPluginLibraryInfo
mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "DSExamplePlugin", LLVM_VERSION_STRING,
          []() { ds::example::registerExampleReportMoEPass(); }};
}
