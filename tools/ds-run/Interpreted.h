//===- Interpreted.h - ds-run on the reference interpreter ----------------===//

#ifndef DS_TOOLS_DS_RUN_INTERPRETED_H
#define DS_TOOLS_DS_RUN_INTERPRETED_H

#include "ds/dialects/DS/IR/DSNamespace.h"

#include "ds/tools/ds-run/Observers.h"

namespace ds::run {

/// One function on --input files and seeded arguments; with `ref`, the
/// reference module runs first on the same arguments and `report` gets the
/// error.
int runOnce(const RunOptions &opts, ModuleOp module, ds::Interpreter &interp,
            ds::Interpreter *ref, Report &report);

/// @prefill on the prompts (equal lengths, one sequence each), then @decode
/// one token at a time, tokens chosen by opts.generation (greedy by
/// default); with `ref`, the reference runs in lockstep on the same tokens.
int runGenerate(const RunOptions &opts, ModuleOp module,
                ds::Interpreter &interp, ds::Interpreter *ref, Report &report);

} // namespace ds::run

#endif // DS_TOOLS_DS_RUN_INTERPRETED_H
