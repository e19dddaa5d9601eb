//===- DSQuant.h - !ds.qtensor and the support quantization code -*- C++
//-*-===//
//
// Maps `!ds.qtensor` types to ds::QScheme (support/Quant.h). Kept out of
// DSOps.h: the support library's namespace `::ds` would make `ds::` ambiguous
// in code that says `using namespace mlir;`.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSQUANT_H
#define DS_DIALECTS_DS_IR_DSQUANT_H

#include "dialects/DS/IR/DSTypes.h"
#include "ds/support/Quant.h"

#include <optional>

namespace mlir::ds {
/// The storage kind of an MLIR storage type (i8/si8, ui8, i4/si4, ui4,
/// f8E4M3FN), or nothing.
std::optional<::ds::QStorage> getQStorage(Type storage);
/// The storage kind and block layout of `type`.
::ds::QScheme getQScheme(QTensorType type);
} // namespace mlir::ds

#endif // DS_DIALECTS_DS_IR_DSQUANT_H
