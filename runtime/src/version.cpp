//===- version.cpp - ds runtime version and status strings ----------------===//
//
// Version queries and status-code names of the C API (ds/runtime.h).
//
//===----------------------------------------------------------------------===//

#include "ds/runtime.h"

#include "LastError.h"

#define DS_STR2(x) #x
#define DS_STR(x) DS_STR2(x)

extern "C" const char *ds_version_string(void) {
  return DS_STR(DS_VERSION_MAJOR) "." DS_STR(DS_VERSION_MINOR) "." DS_STR(
      DS_VERSION_PATCH);
}

extern "C" int ds_version_number(void) { return DS_VERSION_NUMBER; }

extern "C" const char *ds_status_code_string(int code) {
  switch (code) {
  case DS_OK:
    return "ok";
  case DS_INVALID_ARGUMENT:
    return "invalid argument";
  case DS_NOT_FOUND:
    return "not found";
  case DS_OUT_OF_MEMORY:
    return "out of memory";
  case DS_UNIMPLEMENTED:
    return "unimplemented";
  case DS_INTERNAL:
    return "internal error";
  case DS_UNAVAILABLE:
    return "unavailable";
  case DS_DATA_LOSS:
    return "data loss";
  case DS_RESOURCE_EXHAUSTED:
    return "resource exhausted";
  }
  return "unknown status";
}

extern "C" ds_status_code ds_check_abi(int builtAgainst) {
  int major = builtAgainst / 10000, minor = builtAgainst / 100 % 100;
  // Before 1.0 every minor version may change the ABI; after it, a program
  // runs on its own minor version or a later one.
  bool ok = major == DS_VERSION_MAJOR &&
            (DS_VERSION_MAJOR == 0 ? minor == DS_VERSION_MINOR
                                   : minor <= DS_VERSION_MINOR);
  if (ok)
    return DS_OK;
  ds::rt::setLastError("ds_check_abi: the program was built against ds " +
                       std::to_string(major) + "." + std::to_string(minor) +
                       ", the library is " + ds_version_string());
  return DS_UNAVAILABLE;
}
