//===- DSDialect.cpp - ds dialect registration ----------------------------===//
//
// Registers the ds operations and attributes with the dialect.
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSDialect.h"
#include "ds/dialects/DS/IR/DSOps.h"

#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace ds;

#include "ds/dialects/DS/IR/DSDialect.cpp.inc"

void DSDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ds/dialects/DS/IR/DSOps.cpp.inc"
      >();
  registerAttributes();
  registerTypes();
}
