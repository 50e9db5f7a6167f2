// Errors of CUDA calls and bad arguments, for kernels' launchers and host code alike.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace polyvit_cuda {

// ---- errors ------------------------------------------------------------------------------------

// A failed CUDA call or launch. The message names the call, the CUDA error and where it happened.
class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const std::string& message) : std::runtime_error(message), code(code) {}
  cudaError_t code;
};

inline std::string cuda_error_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

// Also resets the thread's last error, so the next launch check does not report this one again
// (sticky errors, after a fault in a kernel, stay whatever is done).
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  cudaGetLastError();
  throw CudaError(err, std::string(call) + " failed with " + cuda_error_text(err) + " (" + file +
                           ":" + std::to_string(line) + ")");
}

#define CUDA_CHECK(call)                                                          \
  do {                                                                            \
    cudaError_t polyvit_err_ = (call);                                            \
    if (polyvit_err_ != cudaSuccess)                                              \
      ::polyvit_cuda::throw_cuda_error(polyvit_err_, #call, __FILE__, __LINE__);  \
  } while (0)

// After every <<<...>>>: a bad configuration shows up here, not at a later unrelated call.
#define CUDA_CHECK_LAUNCH(kernel)                                                          \
  do {                                                                                     \
    cudaError_t polyvit_err_ = cudaGetLastError();                                         \
    if (polyvit_err_ != cudaSuccess)                                                       \
      ::polyvit_cuda::throw_cuda_error(polyvit_err_, "launch of " kernel, __FILE__, __LINE__); \
  } while (0)

// A bad argument reaching a launcher (pybind11 turns std::invalid_argument into ValueError).
inline void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

inline int ceil_div(long long a, long long b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace polyvit_cuda
