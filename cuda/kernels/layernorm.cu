// LayerNorm, one warp per row. Statistics in fp32, two passes (mean, then the centred sum of
// squares): the one-pass E[x^2] - E[x]^2 cancels badly on rows with a large mean.
#include "common.cuh"
#include "layernorm.cuh"

namespace polyvit_cuda {

constexpr int kLayerNormWarps = 4;

// ---- kernel --------------------------------------------------------------------------------------

template <class TIn, class TOut>
__global__ void __launch_bounds__(kLayerNormWarps * 32)
layernorm_kernel(const TIn* x, long long x_row_stride, const float* weight, const float* bias,
                 TOut* y, int rows, int C, float eps) {
  const int row = blockIdx.x * kLayerNormWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // the whole warp leaves together: the shuffles below stay full-warp
  const TIn* xr = x + row * x_row_stride;  // (C,)
  TOut* yr = y + static_cast<long long>(row) * C;   // (C,)

  float sum = 0.0f;
  for (int c = lane; c < C; c += 32) sum += to_float(xr[c]);
  const float mean = warp_sum(sum) / C;

  float squares = 0.0f;
  for (int c = lane; c < C; c += 32) {
    const float d = to_float(xr[c]) - mean;
    squares = fmaf(d, d, squares);
  }
  const float sigma = sqrtf(warp_sum(squares) / C + eps);

  // x is re-read from L1 rather than kept in registers, so any C works with one kernel.
  for (int c = lane; c < C; c += 32)
    yr[c] = from_float<TOut>((to_float(xr[c]) - mean) / sigma * weight[c] + bias[c]);
}

// ---- launcher ------------------------------------------------------------------------------------

template <class TIn, class TOut>
void layernorm(const TIn* x, long long x_row_stride, const float* weight, const float* bias,
               TOut* y, int rows, int C, float eps, cudaStream_t stream) {
  require(rows > 0 && C > 0, "layernorm: rows and C must be positive");
  require(x_row_stride >= C, "layernorm: the row stride of x is smaller than C");
  require(eps > 0.0f, "layernorm: eps must be positive");
  require(x && weight && bias && y, "layernorm: null pointer");
  layernorm_kernel<TIn, TOut><<<ceil_div(rows, kLayerNormWarps), kLayerNormWarps * 32, 0, stream>>>(
      x, x_row_stride, weight, bias, y, rows, C, eps);
  CUDA_CHECK_LAUNCH("layernorm_kernel");
}

template void layernorm<float, float>(const float*, long long, const float*, const float*, float*,
                                      int, int, float, cudaStream_t);
template void layernorm<float, bf16>(const float*, long long, const float*, const float*, bf16*,
                                     int, int, float, cudaStream_t);
template void layernorm<float, fp16>(const float*, long long, const float*, const float*, fp16*,
                                     int, int, float, cudaStream_t);

}  // namespace polyvit_cuda
