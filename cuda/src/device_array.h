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
  bool has_stream = false;          // there is a producer stream to wait for
  cudaStream_t producer = nullptr;  // that stream (cudaStreamLegacy / cudaStreamPerThread too)
  py::object owner;                 // keeps the exporting object alive
  dlpack::ManagedTensor* managed = nullptr;  // a consumed DLPack tensor, released at the end
};

// Borrows obj's device memory, ordered after the producer's pending writes to it:
// - obj.__dlpack__ first, called with stream=consumer, so the producer itself makes `consumer`
//   wait for its work (torch records an event on its current stream). An exporter without the
//   stream keyword is called without it, and its data is taken as ready on the legacy default
//   stream, as DLPack defines for stream=None: has_stream, producer = cudaStreamLegacy.
// - else obj.__cuda_array_interface__: its v3 'stream' is waited for (None: the data is ready);
//   without a 'stream' key (v2, which torch exports) the legacy default stream is.
// The CUDA array interface came first before: torch's has no 'stream', so nothing waited for
// torch's kernels, and the backend's non-blocking stream could read a tensor still being written.
// device: the model's device (-1: unknown). A DLPack array that says it is on another CUDA device
// is a ValueError before __dlpack__ is called, which runs with `device` current (torch exports
// only from the current device and orders on its current stream there); if the exporter still
// raises BufferError, the interface is read instead.
// Host-side checks only (dtype float32, C-contiguous, non-null); TypeError/ValueError otherwise.
std::unique_ptr<DeviceInput> borrow_device_array(py::handle obj, cudaStream_t consumer, int device);

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
