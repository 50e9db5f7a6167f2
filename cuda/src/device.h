// The host side's view of the GPU: probing without a crash, device selection, and RAII owners
// of device memory, streams, events and graphs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include "check.h"

namespace polyvit_cuda {

// Compute capability the kernels are compiled for at least (sm_80: cp.async, bf16 WMMA).
constexpr int kMinComputeMajor = 8;

struct DeviceInfo {
  int index;
  std::string name;
  int major, minor;
  size_t memory;
  int sm_count;
};

struct Probe {
  int count;               // usable CUDA devices (0 when none)
  std::string error;       // why there are none: the driver's error, empty otherwise
  int runtime_version;     // e.g. 13000
  int driver_version;      // 0 when no driver is loaded
  std::vector<DeviceInfo> devices;
};

// What the CUDA runtime sees, computed once per process. Never throws.
const Probe& probe();

// Throws CudaError naming the reason ("no CUDA device: ..." with the driver's error text) when
// `device` cannot run the kernels (none, or older than sm_80), std::invalid_argument when the
// machine has no such index. Touches no device: the checks read probe().
void check_device(int device);

// Makes `device` current for this thread until the scope ends, then restores the device the
// caller had: the backend never leaves the thread's current device changed, which torch and CuPy
// read as theirs (cudaSetDevice is per thread and sticky). Checks the device first
// (check_device's errors); a failed cudaSetDevice is a CudaError. Scopes nest.
class DeviceScope {
 public:
  explicit DeviceScope(int device);
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// The same for destructors of device objects, which may run on any thread and cannot report an
// error: never throws, and a device it cannot make current is left as it is.
class QuietDeviceScope {
 public:
  explicit QuietDeviceScope(int device);
  ~QuietDeviceScope();
  QuietDeviceScope(const QuietDeviceScope&) = delete;
  QuietDeviceScope& operator=(const QuietDeviceScope&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

// Device memory on the device current at construction, freed on that device. DeviceBuffer(bytes)
// is cudaMalloc'd: for what lives as long as a model (weights, the plans its graphs read).
// stream_ordered() is for memory that comes and goes with each call (the ops' operands, the
// logits a DeviceArray hands out): cudaMallocAsync on `alloc_stream`, and cudaFreeAsync on
// `free_stream` when the buffer goes, because cudaFree waits for the whole device, torch's work
// on it included. Where the device has no memory pools it falls back to cudaMalloc/cudaFree.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  static DeviceBuffer stream_ordered(size_t bytes, cudaStream_t alloc_stream, cudaStream_t free_stream);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  int device() const { return device_; }

 private:
  void release() noexcept;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  int device_ = -1;
  bool ordered_ = false;              // freed with cudaFreeAsync on free_stream_
  cudaStream_t free_stream_ = nullptr;
};

// A non-blocking stream: it never synchronises implicitly with the legacy default stream.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = -1;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
  int device_ = -1;
};

// An instantiated CUDA graph, replayed with launch().
class GraphExec {
 public:
  GraphExec() = default;
  explicit GraphExec(cudaGraph_t graph);  // instantiates; the caller still owns graph
  ~GraphExec();
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  void launch(cudaStream_t stream) const;
  explicit operator bool() const { return exec_ != nullptr; }

 private:
  cudaGraphExec_t exec_ = nullptr;
  int device_ = -1;
};

}  // namespace polyvit_cuda
