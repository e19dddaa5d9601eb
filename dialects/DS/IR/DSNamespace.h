//===- DSNamespace.h - the ds namespace and MLIR's names --------*- C++ -*-===//
//
// All of ds lives in one namespace, `::ds`: the dialect, the passes, the
// weights library, the interpreter, the frontends and codegen here, and the
// runtime (`ds::rt`), the support library (`ds::QScheme`, ...) and the tools
// (`ds::run`) beside them. Compiler code uses MLIR's names unqualified, as
// MLIR's own dialects do from inside `::mlir`; this header makes them visible
// in `ds` once, for every compiler header that opens the namespace. The
// runtime never includes it (it links no MLIR).
//
//===----------------------------------------------------------------------===//

#ifndef DS_DIALECTS_DS_IR_DSNAMESPACE_H
#define DS_DIALECTS_DS_IR_DSNAMESPACE_H

#include "mlir/Support/LLVM.h"

namespace ds {
using namespace ::mlir;
} // namespace ds

#endif // DS_DIALECTS_DS_IR_DSNAMESPACE_H
