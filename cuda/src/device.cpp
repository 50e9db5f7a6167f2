#include "device.h"

#include <utility>

namespace polyvit_cuda {

// ---- probing -------------------------------------------------------------------------------------

static Probe run_probe() {
  Probe p{0, "", 0, 0, {}};
  cudaRuntimeGetVersion(&p.runtime_version);
  if (cudaDriverGetVersion(&p.driver_version) != cudaSuccess) p.driver_version = 0;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it: later calls report their own errors
    p.error = "cudaGetDeviceCount failed with " + cuda_error_text(err) + " (error " +
              std::to_string(static_cast<int>(err)) + "; CUDA driver version " +
              std::to_string(p.driver_version) + ", runtime " + std::to_string(p.runtime_version) + ")";
    return p;
  }
  if (count == 0) {
    p.error = "cudaGetDeviceCount found no device";
    return p;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    const cudaError_t perr = cudaGetDeviceProperties(&prop, i);
    if (perr != cudaSuccess) {
      cudaGetLastError();
      p.error = "cudaGetDeviceProperties(" + std::to_string(i) + ") failed with " + cuda_error_text(perr);
      p.devices.clear();
      return p;
    }
    p.devices.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem,
                         prop.multiProcessorCount});
  }
  p.count = count;
  return p;
}

const Probe& probe() {
  static const Probe result = run_probe();  // thread-safe static initialisation
  return result;
}

void use_device(int device) {
  const Probe& p = probe();
  if (p.count == 0) throw CudaError(cudaErrorNoDevice, "no CUDA device: " + p.error);
  if (device < 0 || device >= p.count)
    throw std::invalid_argument("CUDA device " + std::to_string(device) + " does not exist; this "
                                "machine has " + std::to_string(p.count) + " (0 to " +
                                std::to_string(p.count - 1) + ")");
  const DeviceInfo& info = p.devices[device];
  if (info.major < kMinComputeMajor)
    throw CudaError(cudaErrorNoKernelImageForDevice,
                    "CUDA device " + std::to_string(device) + " (" + info.name + ") has compute "
                    "capability " + std::to_string(info.major) + "." + std::to_string(info.minor) +
                    "; polyvit's CUDA kernels need 8.0 or newer");
  CUDA_CHECK(cudaSetDevice(device));
}

DeviceScope::DeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();
    previous_ = -1;
  }
  if (device >= 0 && device != previous_) changed_ = cudaSetDevice(device) == cudaSuccess;
}

DeviceScope::~DeviceScope() {
  if (changed_ && previous_ >= 0) cudaSetDevice(previous_);
}

// ---- owners --------------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  CUDA_CHECK(cudaGetDevice(&device_));
  if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)),
      device_(other.device_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
  }
  return *this;
}

// Errors here cannot be thrown; a failed free after a device fault changes nothing for the caller.
void DeviceBuffer::release() noexcept {
  if (ptr_) {
    DeviceScope scope(device_);
    cudaFree(ptr_);
    ptr_ = nullptr;
  }
}

Stream::Stream() {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) {
    DeviceScope scope(device_);
    cudaStreamDestroy(stream_);
  }
}

Event::Event() {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
}

Event::~Event() {
  if (event_) {
    DeviceScope scope(device_);
    cudaEventDestroy(event_);
  }
}

GraphExec::GraphExec(cudaGraph_t graph) {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaGraphInstantiate(&exec_, graph, 0));
}

GraphExec::~GraphExec() {
  if (exec_) {
    DeviceScope scope(device_);
    cudaGraphExecDestroy(exec_);
  }
}

void GraphExec::launch(cudaStream_t stream) const { CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

}  // namespace polyvit_cuda
