//===- TestPasses.h - ds test-only passes ------------------------*- C++
//-*-===//
//
// Registration of the ds-test-* passes (test/lib/TestPasses.td).
//
//===----------------------------------------------------------------------===//

#ifndef DS_TEST_LIB_TESTPASSES_H
#define DS_TEST_LIB_TESTPASSES_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "mlir/Pass/Pass.h"

namespace ds::test {
#define GEN_PASS_DECL
#include "ds/test/lib/TestPasses.h.inc"

#define GEN_PASS_REGISTRATION
#include "ds/test/lib/TestPasses.h.inc"
} // namespace ds::test

#endif // DS_TEST_LIB_TESTPASSES_H
