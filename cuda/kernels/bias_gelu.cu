// The standalone bias + GELU: one thread per element, a row per blockIdx.y so no division by N.
#include "bias_gelu.cuh"
#include "epilogue.cuh"

namespace polyvit_cuda {

// ---- kernel --------------------------------------------------------------------------------------

__global__ void bias_gelu_kernel(const float* x, const float* bias, float* y, int M, int N,
                                 Epilogue epilogue) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  for (int m = blockIdx.y; m < M; m += gridDim.y) {
    if (n < N) {
      const size_t i = static_cast<size_t>(m) * N + n;
      y[i] = apply_epilogue(x[i], bias, nullptr, i, n, epilogue);
    }
  }
}

// ---- launcher ------------------------------------------------------------------------------------

void bias_gelu(const float* x, const float* bias, float* y, int M, int N, Epilogue epilogue,
               cudaStream_t stream) {
  require(M > 0 && N > 0, "bias_gelu: M and N must be positive");
  require(x && y, "bias_gelu: null input or output");
  require(epilogue == Epilogue::kGeluErf || epilogue == Epilogue::kGeluTanh,
          "bias_gelu: the form must be erf or tanh");
  constexpr int kThreads = 256;
  const dim3 grid(ceil_div(N, kThreads), M < 65535 ? M : 65535);
  bias_gelu_kernel<<<grid, kThreads, 0, stream>>>(x, bias, y, M, N, epilogue);
  CUDA_CHECK_LAUNCH("bias_gelu_kernel");
}

}  // namespace polyvit_cuda
