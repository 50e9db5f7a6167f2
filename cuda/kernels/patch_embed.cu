// patch_embed's im2col as a gather: one thread per patch element, so consecutive threads read
// consecutive pixels of an image row (pw) and write consecutive columns of a patch row.
#include <algorithm>

#include "common.cuh"
#include "patch_embed.cuh"

namespace polyvit_cuda {

// ---- kernel --------------------------------------------------------------------------------------

template <class TOut>
__global__ void patch_embed_gather_kernel(const float* images, TOut* patches, int C, int H, int W,
                                          int P, size_t total) {
  const int grid_w = W / P, per_image = (H / P) * grid_w, patch_dim = C * P * P;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int col = static_cast<int>(i % patch_dim);  // c * P * P + ph * P + pw
    const size_t patch = i / patch_dim;                // b * N + n
    const int n = static_cast<int>(patch % per_image);
    const size_t b = patch / per_image;
    const int c = col / (P * P), ph = (col / P) % P, pw = col % P;
    const int y = (n / grid_w) * P + ph, x = (n % grid_w) * P + pw;
    patches[i] = from_float<TOut>(images[((b * C + c) * H + y) * W + x]);
  }
}

// ---- launcher ------------------------------------------------------------------------------------

template <class TOut>
void patch_embed_gather(const float* images, TOut* patches, int B, int C, int H, int W, int P,
                        cudaStream_t stream) {
  require(B > 0 && C > 0 && H > 0 && W > 0 && P > 0, "patch_embed_gather: sizes must be positive");
  require(H % P == 0 && W % P == 0, "patch_embed_gather: H and W must be multiples of the patch size");
  require(images && patches, "patch_embed_gather: null input or output");
  const size_t total = static_cast<size_t>(B) * C * H * W;  // every pixel moves once
  constexpr int kThreads = 256;
  const int blocks = static_cast<int>(std::min<size_t>((total + kThreads - 1) / kThreads, 1 << 20));
  patch_embed_gather_kernel<TOut><<<blocks, kThreads, 0, stream>>>(images, patches, C, H, W, P, total);
  CUDA_CHECK_LAUNCH("patch_embed_gather_kernel");
}

template void patch_embed_gather<float>(const float*, float*, int, int, int, int, int, cudaStream_t);
template void patch_embed_gather<bf16>(const float*, bf16*, int, int, int, int, int, cudaStream_t);
template void patch_embed_gather<fp16>(const float*, fp16*, int, int, int, int, int, cudaStream_t);

}  // namespace polyvit_cuda
