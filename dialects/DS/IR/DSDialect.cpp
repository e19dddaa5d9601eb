//===- DSDialect.cpp - ds dialect registration ----------------------------===//
//
// Registers the ds operations and attributes with the dialect.
//
//===----------------------------------------------------------------------===//

#include "dialects/DS/IR/DSDialect.h"
#include "dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace mlir::ds;

#include "dialects/DS/IR/DSDialect.cpp.inc"

void DSDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/DS/IR/DSOps.cpp.inc"
      >();
  registerAttributes();
  registerTypes();
}
