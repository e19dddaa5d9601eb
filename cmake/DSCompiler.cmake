#===- DSCompiler.cmake - LLVM/MLIR set-up for the compiler half ------------===#
#
# Finds Debian's LLVM/MLIR 22, pulls in its CMake helpers and flags, and
# defines the thin helpers the compiler directories use. Everything links the
# one shared libMLIR.so (never static MLIR libraries alongside it: options
# would be registered twice).
#===----------------------------------------------------------------------===#
if(NOT MLIR_DIR AND EXISTS /usr/lib/llvm-22/lib/cmake/mlir)
  set(MLIR_DIR /usr/lib/llvm-22/lib/cmake/mlir)
endif()
find_package(MLIR REQUIRED CONFIG)
if(NOT LLVM_VERSION_MAJOR EQUAL 22)
  message(FATAL_ERROR "ds needs LLVM/MLIR 22, found ${LLVM_PACKAGE_VERSION}")
endif()
message(STATUS "Using MLIR ${LLVM_PACKAGE_VERSION} from ${MLIR_DIR}")

list(APPEND CMAKE_MODULE_PATH "${MLIR_CMAKE_DIR}" "${LLVM_CMAKE_DIR}")
set(LLVM_RUNTIME_OUTPUT_INTDIR ${CMAKE_BINARY_DIR}/bin)
set(LLVM_LIBRARY_OUTPUT_INTDIR ${CMAKE_BINARY_DIR}/lib)
set(MLIR_BINARY_DIR ${CMAKE_BINARY_DIR})
include(TableGen)
include(AddLLVM)
include(AddMLIR)
include(HandleLLVMOptions)
if(DS_ENABLE_SANITIZERS)
  # Sanitizer runtimes are linked into executables only; shared libraries
  # must be allowed undefined __asan_* / __ubsan_* references.
  string(REPLACE "-Wl,-z,defs" "" CMAKE_SHARED_LINKER_FLAGS
         "${CMAKE_SHARED_LINKER_FLAGS}")
endif()

separate_arguments(_ds_llvm_defs NATIVE_COMMAND "${LLVM_DEFINITIONS}")
add_definitions(${_ds_llvm_defs})
include_directories(SYSTEM ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})

set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(CMAKE_LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/lib)
set(CMAKE_BUILD_RPATH_USE_ORIGIN ON)
set(CMAKE_INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
# libMLIR.so / libLLVM.so stay where Debian put them.
set(CMAKE_INSTALL_RPATH_USE_LINK_PATH ON)

# Compiler headers and .td files are included by project path,
# "ds/dialects/DS/IR/DSOps.h", and so are the generated ones,
# "ds/dialects/DS/IR/DSOps.h.inc": two include roots in the build tree each
# hold one link named `ds`, to the source tree and to the build tree. The
# components keep their .td, .h and .cpp together (STYLE.md), and an install
# puts the headers at the same paths under include/.
set(DS_INCLUDE_ROOT ${DS_BINARY_DIR}/include-root/src)
set(DS_GEN_INCLUDE_ROOT ${DS_BINARY_DIR}/include-root/gen)
file(MAKE_DIRECTORY ${DS_INCLUDE_ROOT} ${DS_GEN_INCLUDE_ROOT})
file(CREATE_LINK ${DS_SOURCE_DIR} ${DS_INCLUDE_ROOT}/ds SYMBOLIC)
file(CREATE_LINK ${DS_BINARY_DIR} ${DS_GEN_INCLUDE_ROOT}/ds SYMBOLIC)
include_directories(${DS_INCLUDE_ROOT} ${DS_GEN_INCLUDE_ROOT})

# ds_add_tablegen_target(<name>): add_public_tablegen_target over this
# directory's mlir_tablegen outputs, which also names each output by the
# path the compiler sees, ${DS_GEN_INCLUDE_ROOT}/ds/<path>, as the output of
# a step after the generator. Compilers write that path into their depfiles;
# without the step ninja would stat it before mlir-tblgen rewrites the file
# and never rebuild the objects that include it (after a .td change, an
# object would keep a stale pass-options layout, say).
function(ds_add_tablegen_target target)
  get_directory_property(done DS_TABLEGEN_ALIASES)
  set(outputs ${TABLEGEN_OUTPUT})
  foreach(out ${TABLEGEN_OUTPUT})
    file(RELATIVE_PATH rel ${DS_BINARY_DIR} ${out})
    set(alias ${DS_GEN_INCLUDE_ROOT}/ds/${rel})
    if(NOT alias IN_LIST done)
      add_custom_command(OUTPUT ${alias}
        COMMAND ${CMAKE_COMMAND} -E touch_nocreate ${alias}
        DEPENDS ${out}
        COMMENT "")
      list(APPEND done ${alias})
    endif()
    list(APPEND outputs ${alias})
  endforeach()
  set_directory_properties(PROPERTIES DS_TABLEGEN_ALIASES "${done}")
  set(TABLEGEN_OUTPUT ${outputs})
  add_public_tablegen_target(${target})
endfunction()

# ds_add_library(<name> SOURCES ... [DEPENDS ...] [LINK ...]): a shared ds
# compiler library. Shared, so that ds-opt and out-of-tree plugins see one
# copy of every TypeID.
function(ds_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPENDS;LINK" ${ARGN})
  add_library(${name} SHARED ${ARG_SOURCES})
  add_library(DS::${name} ALIAS ${name})
  if(ARG_DEPENDS)
    add_dependencies(${name} ${ARG_DEPENDS})
  endif()
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${DS_INCLUDE_ROOT}>
    $<BUILD_INTERFACE:${DS_GEN_INCLUDE_ROOT}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${name} PUBLIC ${ARG_LINK} MLIR LLVM)
  set_property(GLOBAL APPEND PROPERTY DS_COMPILER_LIBS ${name})
endfunction()
