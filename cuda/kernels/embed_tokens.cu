// Class token and position embedding in one pass over x: one thread per element.
#include <algorithm>

#include "common.cuh"
#include "embed_tokens.cuh"

namespace polyvit_cuda {

// ---- kernel --------------------------------------------------------------------------------------

__global__ void embed_tokens_kernel(const float* patch_embeddings, const float* cls,
                                    const float* pos, float* x, int T, int D, size_t total) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int d = static_cast<int>(i % D);
    const size_t token = i / D;  // b * T + t
    const int t = static_cast<int>(token % T);
    const size_t b = token / T;
    const float v = t == 0 ? cls[d] : patch_embeddings[(b * (T - 1) + t - 1) * D + d];
    x[i] = v + pos[static_cast<size_t>(t) * D + d];
  }
}

// ---- launcher ------------------------------------------------------------------------------------

void embed_tokens(const float* patch_embeddings, const float* cls, const float* pos, float* x,
                  int B, int T, int D, cudaStream_t stream) {
  require(B > 0 && T > 1 && D > 0, "embed_tokens: B and D must be positive and T at least 2");
  require(patch_embeddings && cls && pos && x, "embed_tokens: null pointer");
  const size_t total = static_cast<size_t>(B) * T * D;
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + kThreads - 1) / kThreads, 1 << 20));
  embed_tokens_kernel<<<blocks, kThreads, 0, stream>>>(patch_embeddings, cls, pos, x, T, D, total);
  CUDA_CHECK_LAUNCH("embed_tokens_kernel");
}

}  // namespace polyvit_cuda
