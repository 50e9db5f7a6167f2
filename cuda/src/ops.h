// The single ops exposed to Python (op-level parity harness, kernel benchmarks).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

namespace polyvit_cuda {

namespace py = pybind11;

// obj as a float32 C-contiguous numpy array, without a copy; TypeError (not an array, wrong
// dtype) or ValueError (not C-contiguous) naming `name` and the fix otherwise.
py::array host_float32(py::handle obj, const char* name);

void bind_ops(py::module_& m);

}  // namespace polyvit_cuda
