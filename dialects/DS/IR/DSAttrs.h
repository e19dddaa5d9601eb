//===- DSAttrs.h - ds attributes and enums -----------------------*- C++
//-*-===//
//
// The ds enums (scoring, activations, RoPE layout/scaling) and the structured
// attributes #ds.rope and #ds.routing.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSATTRS_H
#define DS_DIALECTS_DS_IR_DSATTRS_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/APFloat.h"

#include "ds/dialects/DS/IR/DSEnums.h.inc"
#include "ds/dialects/DS/IR/DSTypes.h"

namespace ds {
/// Parses a float literal (integer literals are accepted) as an f64 APFloat.
FailureOr<llvm::APFloat> parseF64Param(AsmParser &parser);
/// Prints an f64 APFloat so that it parses back to the same value.
void printF64Param(AsmPrinter &printer, const llvm::APFloat &value);
/// Parses `true` or `false`.
FailureOr<bool> parseBoolParam(AsmParser &parser);
/// Parses `[i, j, ...]`.
FailureOr<SmallVector<int64_t>> parseI64ListParam(AsmParser &parser);
void printI64ListParam(AsmPrinter &printer, ArrayRef<int64_t> values);
} // namespace ds

#define GET_ATTRDEF_CLASSES
#include "ds/dialects/DS/IR/DSAttrs.h.inc"

#endif // DS_DIALECTS_DS_IR_DSATTRS_H
