# One way to declare a native backend's build option, for every backend.
#
# polyvit_backend(NAME <name> DIR <subdirectory> DEFAULT <AUTO|ON|OFF> DOC <text>)
#   declares the cache variable POLYVIT_<NAME> (AUTO, ON or OFF, in any case; anything else is a
#   configure error, so a typo such as "yes" never silently means AUTO). OFF skips the
#   subdirectory; otherwise it is added with POLYVIT_<NAME>_MODE set to AUTO or ON, which decides
#   what a missing prerequisite means there (polyvit_backend_unavailable, below).
#
# pyproject.toml maps each POLYVIT_<NAME> environment variable onto its option, so
# `POLYVIT_SYCL=ON pip install .` and `cmake -DPOLYVIT_SYCL=ON` mean the same.
set(POLYVIT_BACKEND_MODES AUTO ON OFF)

function(polyvit_backend)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "NAME;DIR;DEFAULT;DOC" "")
  string(TOUPPER "${arg_NAME}" name)
  set(option POLYVIT_${name})
  set(${option} ${arg_DEFAULT} CACHE STRING "${arg_DOC}: AUTO, ON or OFF")
  set_property(CACHE ${option} PROPERTY STRINGS ${POLYVIT_BACKEND_MODES})
  string(TOUPPER "${${option}}" mode)
  if(NOT mode IN_LIST POLYVIT_BACKEND_MODES)
    message(FATAL_ERROR "${option}='${${option}}' is not a backend mode: use AUTO (build it when "
                        "its prerequisites are found), ON (require them) or OFF, in any case")
  endif()
  if(mode STREQUAL "OFF")
    message(STATUS "polyvit: ${arg_NAME} backend off (${option}=OFF)")
    return()
  endif()
  # a variable of this function's scope, which the subdirectory inherits
  set(${option}_MODE ${mode})
  add_subdirectory(${arg_DIR})
endfunction()

# polyvit_backend_unavailable(<name> <why>...)
#   in a backend's CMakeLists.txt, when a prerequisite is missing (the strings after the name,
#   joined, say which): under ON a configure error; under AUTO a STATUS line, and the rest of
#   that CMakeLists.txt is skipped. A macro, so that its return() leaves the calling file.
macro(polyvit_backend_unavailable name)
  string(TOUPPER "${name}" _polyvit_name)
  string(CONCAT _polyvit_why ${ARGN})
  if(POLYVIT_${_polyvit_name}_MODE STREQUAL "ON")
    message(FATAL_ERROR "POLYVIT_${_polyvit_name}=ON, but ${_polyvit_why}")
  endif()
  message(STATUS "polyvit: ${name} backend not built (POLYVIT_${_polyvit_name}=AUTO): "
                 "${_polyvit_why}")
  return()
endmacro()
