//===- IRFuzzer.cpp - libFuzzer target for ds IR parsing and verification
//---===//
//
// Feeds arbitrary text to the MLIR parser with the ds dialect (and the
// upstream dialects ds IR uses) loaded, then verifies what parsed: ds types,
// attributes, custom op syntax, result-type inference and every verifier
// must end in IR or a diagnostic, never a crash.
//
//   ASAN_OPTIONS=allow_user_poisoning=0 \
//     build/test/fuzz/ds-fuzz-ir -max_total_time=60 CORPUS_DIR
// (Debian's uninstrumented libMLIR poisons its own allocator memory; see
// scripts/common.sh.)
//
//===----------------------------------------------------------------------===//

#include "ds/dialects/DS/IR/DSDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static mlir::MLIRContext *context = [] {
    mlir::DialectRegistry registry;
    registry.insert<ds::DSDialect, mlir::func::FuncDialect,
                    mlir::arith::ArithDialect, mlir::math::MathDialect,
                    mlir::tensor::TensorDialect>();
    auto *ctx = new mlir::MLIRContext(registry);
    ctx->loadAllAvailableDialects();
    ctx->allowUnregisteredDialects(false);
    // Diagnostics are expected; keep them quiet.
    ctx->getDiagEngine().registerHandler([](mlir::Diagnostic &) {});
    return ctx;
  }();
  // The MLIR lexer reads up to a terminating NUL: give it one.
  std::string text(reinterpret_cast<const char *>(data), size);
  mlir::ParserConfig config(context, /*verifyAfterParse=*/true);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, config);
  if (module)
    (void)mlir::verify(*module);
  return 0;
}
