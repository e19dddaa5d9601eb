//===- DSQuant.h - !ds.qtensor and the support quantization code -*- C++
//-*-===//
//
// Maps `!ds.qtensor` types to ds::QScheme (ds/support/Quant.h). Kept out of
// DSOps.h so that the dialect's headers do not pull in the support library.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSQUANT_H
#define DS_DIALECTS_DS_IR_DSQUANT_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/dialects/DS/IR/DSTypes.h"
#include "ds/support/Quant.h"

#include <optional>

namespace ds {
/// The storage kind of an MLIR storage type (i8/si8, ui8, i4/si4, ui4,
/// f8E4M3FN), or nothing.
std::optional<QStorage> getQStorage(Type storage);
/// The storage kind and block layout of `type`.
QScheme getQScheme(QTensorType type);
} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSQUANT_H
