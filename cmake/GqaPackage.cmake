# Install rules that let other projects use an installed libgqa:
#   find_package(gqa CONFIG)  ->  imported target gqa::gqa   (lib/cmake/gqa/)
#   pkg-config gqa            ->  gqa.pc                       (lib/pkgconfig/)
# Included by the top-level CMakeLists.txt right after `install(TARGETS gqa EXPORT gqaTargets ...)`,
# outside the Python wheel build (the wheel carries its own copy of the library).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(GQA_CMAKE_PACKAGE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/gqa")

install(EXPORT gqaTargets
  NAMESPACE gqa::
  FILE gqaTargets.cmake
  DESTINATION "${GQA_CMAKE_PACKAGE_DIR}")

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/gqaConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/gqaConfig.cmake"
  INSTALL_DESTINATION "${GQA_CMAKE_PACKAGE_DIR}")
# A newer minor version only appends (the growth rule of gqa.h: a break bumps GQA_ABI_VERSION,
# which every binding checks at run time), so any version >= the one asked for, of the same
# major, satisfies a request: find_package(gqa 0.1) finds 0.2.
write_basic_package_version_file(
  "${CMAKE_CURRENT_BINARY_DIR}/gqaConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/gqaConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/gqaConfigVersion.cmake"
  DESTINATION "${GQA_CMAKE_PACKAGE_DIR}")

# gqa.pc finds its prefix relative to its own folder (${pcfiledir}), because the prefix is often
# chosen only at install time (`cmake --install build --prefix DIR`), after this file is written.
file(RELATIVE_PATH GQA_PC_PREFIX_FROM_PCDIR
  "/gqa-root/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/gqa-root")
string(REGEX REPLACE "/$" "" GQA_PC_PREFIX_FROM_PCDIR "${GQA_PC_PREFIX_FROM_PCDIR}")
set(GQA_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
set(GQA_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
set(GQA_PC_RPATH "")  # a system prefix needs no rpath; the wheel's gqa.pc carries one
configure_file("${CMAKE_CURRENT_LIST_DIR}/gqa.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/gqa.pc" @ONLY)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/gqa.pc"
  DESTINATION "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
