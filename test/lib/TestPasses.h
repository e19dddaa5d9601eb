//===- TestPasses.h - ds test-only passes ------------------------*- C++
//-*-===//
//
// Registration of the ds-test-* passes (test/lib/TestPasses.td).
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_LIB_TESTPASSES_H
#define DS_TEST_LIB_TESTPASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::ds::test {
#define GEN_PASS_DECL
#include "test/lib/TestPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "test/lib/TestPasses.h.inc"
} // namespace mlir::ds::test

#endif // DS_TEST_LIB_TESTPASSES_H
