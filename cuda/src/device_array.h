// Arrays in device memory crossing the Python boundary: borrowed inputs (CUDA array interface
// or DLPack, no copy) and the DeviceArray output, which exports both protocols.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <vector>

#include "device.h"
#include "dlpack_abi.h"

namespace polyvit_cuda {

namespace py = pybind11;

// A float32 C-contiguous device array borrowed from a Python object for one call. Destroy it
// with the GIL held: releasing a DLPack tensor calls back into its producer.
class DeviceInput {
 public:
  DeviceInput() = default;
  ~DeviceInput();
  DeviceInput(const DeviceInput&) = delete;
  DeviceInput& operator=(const DeviceInput&) = delete;

  const float* data = nullptr;
  std::vector<long long> shape;
  bool has_stream = false;          // the producer named a stream to wait for
  cudaStream_t producer = nullptr;  // that stream (cudaStreamLegacy / cudaStreamPerThread too)
  py::object owner;                 // keeps the exporting object alive
  dlpack::ManagedTensor* managed = nullptr;  // a consumed DLPack tensor, released at the end
};

// Reads obj.__cuda_array_interface__ (preferred: torch and CuPy have it) or obj.__dlpack__.
// Host-side checks only (dtype float32, C-contiguous, non-null); TypeError/ValueError otherwise.
// consumer: the stream the data will be read on (passed to __dlpack__ so the producer orders
// its work before it).
std::unique_ptr<DeviceInput> borrow_device_array(py::handle obj, cudaStream_t consumer);

// Throws ValueError unless ptr is device (or managed) memory of `device`. Needs a device.
void check_device_pointer(const void* ptr, int device);

// Logits (or any float32 array) owned on a device; exported without copies.
class DeviceArray {
 public:
  DeviceArray(std::shared_ptr<DeviceBuffer> buffer, std::vector<long long> shape);
  const std::vector<long long>& shape() const { return shape_; }
  int device() const { return buffer_->device(); }
  py::dict cuda_array_interface() const;
  py::capsule dlpack(py::object stream, py::object max_version, py::object dl_device,
                     py::object copy) const;
  py::tuple dlpack_device() const;
  py::array_t<float> numpy() const;

 private:
  std::shared_ptr<DeviceBuffer> buffer_;
  std::vector<long long> shape_;
};

void bind_device_array(py::module_& m);

}  // namespace polyvit_cuda
