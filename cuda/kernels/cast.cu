// Converting arrays between float and bf16/fp16 on the device (numpy has no bfloat16).
#include "cast.cuh"

#include <algorithm>

#include "common.cuh"

namespace polyvit_cuda {

// ---- kernel --------------------------------------------------------------------------------------

template <class TIn, class TOut>
__global__ void cast_kernel(const TIn* x, TOut* y, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = from_float<TOut>(to_float(x[i]));
}

// ---- launcher ------------------------------------------------------------------------------------

template <class TIn, class TOut>
void cast(const TIn* x, TOut* y, size_t n, cudaStream_t stream) {
  require(x && y, "cast: null input or output");
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((n + kThreads - 1) / kThreads, 65535));
  cast_kernel<TIn, TOut><<<blocks, kThreads, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH("cast_kernel");
}

template void cast<float, bf16>(const float*, bf16*, size_t, cudaStream_t);
template void cast<float, fp16>(const float*, fp16*, size_t, cudaStream_t);
template void cast<bf16, float>(const bf16*, float*, size_t, cudaStream_t);
template void cast<fp16, float>(const fp16*, float*, size_t, cudaStream_t);

}  // namespace polyvit_cuda
