/*===- ds/runtime.h - the ds runtime C API ------------------------*- C -*-===*\
|*                                                                            *|
|* The stable C entry points of the ds runtime: status codes and version     *|
|* queries today; sessions, host tensors and execution arrive with the      *|
|* runtime issue. No MLIR or LLVM types appear here, and no C++ exception    *|
|* crosses this boundary.                                                    *|
|*                                                                            *|
\*===----------------------------------------------------------------------===*/

#ifndef DS_RUNTIME_H
#define DS_RUNTIME_H

#ifdef __cplusplus
extern "C" {
#endif

/// Result of every ds_* call.
typedef enum ds_status_code {
  DS_OK = 0,
  DS_INVALID_ARGUMENT = 1,
  DS_NOT_FOUND = 2,
  DS_OUT_OF_MEMORY = 3,
  DS_UNIMPLEMENTED = 4,
  DS_INTERNAL = 5,
  DS_UNAVAILABLE = 6,
  DS_DATA_LOSS = 7,
} ds_status_code;

/// "major.minor.patch" of the runtime library.
const char *ds_version_string(void);

/// The runtime's version as major * 10000 + minor * 100 + patch.
int ds_version_number(void);

/// A short, static, human-readable name for a status code ("ok",
/// "invalid argument", ...); "unknown status" for values outside the enum.
const char *ds_status_code_string(int code);

/// Compares the version a program was built against with the loaded
/// library; DS_OK when the major versions agree, else DS_UNAVAILABLE.
ds_status_code ds_check_abi(int built_against_version_number);

#define DS_VERSION_MAJOR 0
#define DS_VERSION_MINOR 1
#define DS_VERSION_PATCH 0
#define DS_VERSION_NUMBER                                                      \
  (DS_VERSION_MAJOR * 10000 + DS_VERSION_MINOR * 100 + DS_VERSION_PATCH)

#ifdef __cplusplus
} // extern "C"
#endif

#endif // DS_RUNTIME_H
