// out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias (N,)) in fp32 on CUDA cores (no TF32):
// the strict-parity path.
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// bias may be null; residual (M, N) is read only by Epilogue::kResidual and may equal out.
// strides: a's and the residual's row strides when they are not dense.
void linear_fp32(const float* a, const float* w, const float* bias, const float* residual,
                 float* out, int M, int N, int K, Epilogue epilogue, cudaStream_t stream,
                 RowStrides strides = {});

}  // namespace polyvit_cuda
