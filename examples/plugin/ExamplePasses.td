//===- ExamplePasses.td - an out-of-tree ds pass plugin -----*- tablegen -*-===//
//
// The pass of the example plugin: shows how research passes are declared and
// built against an installed ds.
//
//===----------------------------------------------------------------------===//

#ifndef DS_EXAMPLE_PASSES_TD
#define DS_EXAMPLE_PASSES_TD

include "mlir/Pass/PassBase.td"

def ExampleReportMoEPass : Pass<"ds-example-report-moe"> {
  let summary = "Report each MoE router's expert count and top-k as remarks";
  let description = [{
    An example plugin pass that reads ds ops through the ds C++ API: every
    `ds.moe` and `ds.router` gets a remark
    `routes <top_k> of <num_experts> experts (<scoring>)`.
  }];
}

#endif // DS_EXAMPLE_PASSES_TD
