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

// Makes `device` current for this thread. Throws CudaError naming the reason ("no CUDA device:
// ..." with the driver's error text) when it does not exist or is older than sm_80.
void use_device(int device);

// Sets a device for the lifetime of a scope and restores the previous one (destructors of
// device objects may run on any thread).
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

// cudaMalloc'd memory on the device current at construction, freed on that device.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
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
