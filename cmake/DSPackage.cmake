#===- DSPackage.cmake - install rules and the exported DS package ---------===#
#
# `cmake --install` puts headers under include/ds (so "ds/dialects/DS/IR/DSOps.h"
# and "ds/rt/Session.h" resolve from include/), libraries under lib, and DSConfig.cmake + DSTargets.cmake under
# lib/cmake/ds, so out-of-tree projects can find_package(DS) and link
# DS::DSDialect, DS::DSPasses or DS::ds_runtime.
#===----------------------------------------------------------------------===#
include(CMakePackageConfigHelpers)
set(DS_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/ds)

if(DS_BUILD_COMPILER)
  get_property(_ds_libs GLOBAL PROPERTY DS_COMPILER_LIBS)
  install(TARGETS ${_ds_libs} EXPORT DSTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  foreach(dir dialects weights passes interpreter frontends)
    install(DIRECTORY ${DS_SOURCE_DIR}/${dir}
      DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ds
      FILES_MATCHING PATTERN "*.h" PATTERN "*.td")
    install(DIRECTORY ${DS_BINARY_DIR}/${dir}
      DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ds
      FILES_MATCHING PATTERN "*.inc"
      PATTERN "CMakeFiles" EXCLUDE)
  endforeach()
endif()

install(EXPORT DSTargets NAMESPACE DS:: DESTINATION ${DS_INSTALL_CMAKEDIR})
set(DS_PACKAGE_HAS_COMPILER ${DS_BUILD_COMPILER})
configure_package_config_file(${DS_SOURCE_DIR}/cmake/DSConfig.cmake.in
  ${DS_BINARY_DIR}/DSConfig.cmake INSTALL_DESTINATION ${DS_INSTALL_CMAKEDIR})
write_basic_package_version_file(${DS_BINARY_DIR}/DSConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${DS_BINARY_DIR}/DSConfig.cmake
  ${DS_BINARY_DIR}/DSConfigVersion.cmake DESTINATION ${DS_INSTALL_CMAKEDIR})
