//===- DSDialect.h - The ds dialect ------------------------------*- C++
//-*-===//
//
// Declares the ds dialect class. Include DSOps.h for the operations and
// DSAttrs.h for the attributes.
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSDIALECT_H
#define DS_DIALECTS_DS_IR_DSDIALECT_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/IR/Dialect.h"

#include "ds/dialects/DS/IR/DSDialect.h.inc"

#endif // DS_DIALECTS_DS_IR_DSDIALECT_H
