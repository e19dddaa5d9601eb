//===- Compiled.h - ds-run on compiled code (JIT, cache or artifact) ------===//

#ifndef DS_TOOLS_DS_RUN_COMPILED_H
#define DS_TOOLS_DS_RUN_COMPILED_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/tools/ds-run/Options.h"

#include "ds/interpreter/Interpreter.h"
#include "ds/rt/Executor.h"

#include <memory>

namespace ds::run {

using mlir::ModuleOp;

/// The model of --backend jit | cached | artifact=FILE. A module that is not
/// optimized yet (straight from the importer) goes through the default
/// ds-optimize pipeline first (jit and cached alike). Null after an error
/// message.
std::shared_ptr<const rt::Model> loadCompiled(const RunOptions &opts,
                                              ModuleOp module,
                                              const ds::Checkpoint *weights);

/// One function on compiled code, on the arguments runOnce builds (cache
/// arguments become the initial contents of KV cache slots 0..B-1); with
/// `interp`, compared result by result (caches included).
int runOnceCompiled(const RunOptions &opts,
                    std::shared_ptr<const rt::Model> model, ModuleOp module,
                    ds::Interpreter *interp);

/// Generation on compiled code: each prompt prefilled in its own KV cache
/// slot (prompts may differ in length), then one decode step per token over
/// the sequences still running; tokens chosen by opts.generation. With
/// `interp`, the interpreter runs the same tokens in lockstep: every logits
/// tensor is compared within --check-tolerance and every token is chosen
/// from the interpreter's logits too and must agree. Then --serve.
int runGenerateCompiled(const RunOptions &opts,
                        std::shared_ptr<const rt::Model> model, ModuleOp module,
                        ds::Interpreter *interp);

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_COMPILED_H
