//===- LastError.h - the message ds_last_error() returns ------------------===//
//
// Private to the C API's sources (CApi.cpp owns the thread-local message;
// version.cpp's entry points set it too).
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_LASTERROR_H
#define DS_RT_LASTERROR_H

#include <string>

namespace ds::rt {
/// Sets this thread's ds_last_error() message.
void setLastError(std::string message);
} // namespace ds::rt

#endif // DS_RT_LASTERROR_H
