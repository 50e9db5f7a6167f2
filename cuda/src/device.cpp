#include "device.h"

#include <atomic>
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

void check_device(int device) {
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
}

DeviceScope::DeviceScope(int device) {
  check_device(device);
  CUDA_CHECK(cudaGetDevice(&previous_));
  if (device != previous_) {
    CUDA_CHECK(cudaSetDevice(device));
    changed_ = true;
  }
}

// Restoring can only fail after a device fault, which the next call reports anyway.
DeviceScope::~DeviceScope() {
  if (changed_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

QuietDeviceScope::QuietDeviceScope(int device) {
  if (cudaGetDevice(&previous_) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  if (device >= 0 && device != previous_) {
    changed_ = cudaSetDevice(device) == cudaSuccess;
    if (!changed_) cudaGetLastError();
  }
}

QuietDeviceScope::~QuietDeviceScope() {
  if (changed_ && cudaSetDevice(previous_) != cudaSuccess) cudaGetLastError();
}

// ---- owners --------------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  CUDA_CHECK(cudaGetDevice(&device_));
  if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

// Whether `device` has stream-ordered memory pools (every sm_80+ GPU on a current driver; some
// virtualised setups lack them), asked once per device.
static bool memory_pools_supported(int device) {
  constexpr int kCached = 64;
  static std::atomic<int> cache[kCached];  // 0 unknown, 1 no, 2 yes
  int known = device < kCached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (known == 0) {
    int supported = 0;
    if (cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device) != cudaSuccess) {
      cudaGetLastError();
      supported = 0;
    }
    known = supported ? 2 : 1;
    if (device < kCached) cache[device].store(known, std::memory_order_relaxed);
  }
  return known == 2;
}

DeviceBuffer DeviceBuffer::stream_ordered(size_t bytes, cudaStream_t alloc_stream, cudaStream_t free_stream) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (!memory_pools_supported(device)) return DeviceBuffer(bytes);
  DeviceBuffer buffer;
  buffer.bytes_ = bytes;
  buffer.device_ = device;
  buffer.ordered_ = true;
  buffer.free_stream_ = free_stream;
  if (bytes > 0) CUDA_CHECK(cudaMallocAsync(&buffer.ptr_, bytes, alloc_stream));
  return buffer;
}

DeviceBuffer::~DeviceBuffer() { release(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)),
      device_(other.device_), ordered_(other.ordered_), free_stream_(other.free_stream_) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    device_ = other.device_;
    ordered_ = other.ordered_;
    free_stream_ = other.free_stream_;
  }
  return *this;
}

// Errors here cannot be thrown; a failed free after a device fault changes nothing for the caller.
void DeviceBuffer::release() noexcept {
  if (ptr_) {
    QuietDeviceScope scope(device_);
    if ((ordered_ ? cudaFreeAsync(ptr_, free_stream_) : cudaFree(ptr_)) != cudaSuccess) cudaGetLastError();
    ptr_ = nullptr;
  }
}

Stream::Stream() {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

Stream::~Stream() {
  if (stream_) {
    QuietDeviceScope scope(device_);
    cudaStreamDestroy(stream_);
  }
}

Event::Event() {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
}

Event::~Event() {
  if (event_) {
    QuietDeviceScope scope(device_);
    cudaEventDestroy(event_);
  }
}

GraphExec::GraphExec(cudaGraph_t graph) {
  CUDA_CHECK(cudaGetDevice(&device_));
  CUDA_CHECK(cudaGraphInstantiate(&exec_, graph, 0));
}

GraphExec::~GraphExec() {
  if (exec_) {
    QuietDeviceScope scope(device_);
    cudaGraphExecDestroy(exec_);
  }
}

void GraphExec::launch(cudaStream_t stream) const { CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

}  // namespace polyvit_cuda
