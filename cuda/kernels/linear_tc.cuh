// out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias (N,)) on tensor cores: bf16 or fp16 inputs,
// fp32 accumulation, fp32 bias/epilogue, output rounded to TOut (T or float).
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// T: bf16 or fp16. bias may be null; residual (M, N) float is read only by
// Epilogue::kResidual and may equal out. strides: a's and the residual's row strides when they
// are not dense.
template <class T, class TOut>
void linear_tc(const T* a, const T* w, const float* bias, const float* residual, TOut* out, int M,
               int N, int K, Epilogue epilogue, cudaStream_t stream, RowStrides strides = {});

}  // namespace polyvit_cuda
