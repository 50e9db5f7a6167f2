// A strided row copy, one thread per element: B * D floats, too few to need more.
#include <algorithm>

#include "class_tokens.cuh"
#include "common.cuh"

namespace polyvit_cuda {

// ---- kernel --------------------------------------------------------------------------------------

__global__ void class_tokens_kernel(const float* x, float* cls, int T, int D, size_t total) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const size_t b = i / D;
    cls[i] = x[b * T * D + i % D];
  }
}

// ---- launcher ------------------------------------------------------------------------------------

void class_tokens(const float* x, float* cls, int B, int T, int D, cudaStream_t stream) {
  require(B > 0 && T > 0 && D > 0, "class_tokens: B, T and D must be positive");
  require(x && cls, "class_tokens: null input or output");
  const size_t total = static_cast<size_t>(B) * D;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + kThreads - 1) / kThreads, 1 << 20));
  class_tokens_kernel<<<blocks, kThreads, 0, stream>>>(x, cls, T, D, total);
  CUDA_CHECK_LAUNCH("class_tokens_kernel");
}

}  // namespace polyvit_cuda
