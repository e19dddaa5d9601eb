//===- DSSharding.cpp - pipelined functions' stage lists ------------------===//

#include "ds/dialects/DS/IR/DSSharding.h"

#include "mlir/IR/SymbolTable.h"

using namespace mlir;

FailureOr<std::optional<ds::PipelineStages>>
ds::pipelineStagesOf(func::FuncOp fn) {
  Attribute attr = fn->getAttr(kPipelineStagesAttrName);
  if (!attr)
    return std::optional<PipelineStages>();
  auto list = dyn_cast<ArrayAttr>(attr);
  auto axis = fn->getAttrOfType<IntegerAttr>(kPipelineAxisAttrName);
  if (!list || list.empty() || !axis)
    return fn.emitError() << kPipelineStagesAttrName
                          << " must list the stage functions, with "
                          << kPipelineAxisAttrName << " naming their axis";
  PipelineStages out;
  out.axis = static_cast<int16_t>(axis.getInt());
  for (Attribute a : list) {
    auto ref = dyn_cast<FlatSymbolRefAttr>(a);
    auto stage =
        ref ? SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(fn, ref)
            : func::FuncOp();
    if (!stage || stage.isExternal())
      return fn.emitError()
             << "pipeline stage " << a << " is not a function with a body";
    out.stages.push_back(stage);
  }
  return std::optional<PipelineStages>(std::move(out));
}
