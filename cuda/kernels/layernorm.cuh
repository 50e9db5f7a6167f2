// y (rows, C) = (x - mean) / sqrt(var + eps) * weight + bias over each row of x, var biased.
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// Row r of x starts at x + r * x_row_stride (>= C): the final norm reads only the class tokens
// of (B, T, D) with stride T * D. y is dense (rows, C). TIn: float; TOut: float, bf16 or fp16.
template <class TIn, class TOut>
void layernorm(const TIn* x, long long x_row_stride, const float* weight, const float* bias,
               TOut* y, int rows, int C, float eps, cudaStream_t stream);

}  // namespace polyvit_cuda
