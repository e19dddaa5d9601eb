//===- DSTypes.h - ds types ----------------------------------------*- C++
//-*-===//
//
// `!ds.qtensor`, the block-quantized tensor type. (DSQuant.h connects it to
// the support library's quantization code.)
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSTYPES_H
#define DS_DIALECTS_DS_IR_DSTYPES_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/Types.h"

#define GET_TYPEDEF_CLASSES
#include "ds/dialects/DS/IR/DSTypes.h.inc"

namespace ds {
/// The tensor a value stands for: its own type, or a !ds.qtensor's logical
/// type.
RankedTensorType getLogicalTensorType(Type type);
} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSTYPES_H
