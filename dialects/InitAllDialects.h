//===- InitAllDialects.h - dialects ds IR uses -------------------*- C++
//-*-===//
//
// Registers the ds dialect and every upstream dialect that ds IR is written
// with (func, arith, math, tensor, linalg, quant, shard), so tools and
// embedders load one consistent set.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_INITALLDIALECTS_H
#define DS_DIALECTS_INITALLDIALECTS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Quant/IR/Quant.h"
#include "mlir/Dialect/Shard/IR/ShardDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"

namespace ds {
inline void registerAllDialects(DialectRegistry &registry) {
  registry.insert<DSDialect, arith::ArithDialect, func::FuncDialect,
                  linalg::LinalgDialect, math::MathDialect, quant::QuantDialect,
                  shard::ShardDialect, tensor::TensorDialect>();
}
} // namespace ds

#endif // DS_DIALECTS_INITALLDIALECTS_H
