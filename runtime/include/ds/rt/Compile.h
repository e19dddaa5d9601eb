//===- Compile.h - the runtime's hook into the compiler ----------*- C++
//-*-===//
//
// The runtime never links the compiler. ds_model_compile calls the hook the
// compiler library (DSCodegen) installs when it is loaded; without it the
// call reports that no compiler is present.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_COMPILE_H
#define DS_RT_COMPILE_H

#include "ds/rt/Executor.h"

namespace ds::rt {
using CompileHook = absl::StatusOr<std::shared_ptr<Model>> (*)(
    const std::string &path, const std::string &optimize);
void setCompileHook(CompileHook hook);
} // namespace ds::rt

#endif // DS_RT_COMPILE_H
