// Element types and epilogue names shared by the launchers and the host code.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace polyvit_cuda {

using bf16 = __nv_bfloat16;
using fp16 = __half;

// What a linear does after out = a @ w^T + bias: nothing, a GELU, or adding a residual
// (residual may alias out: each element is read and then written by the same thread).
enum class Epilogue { kNone, kGeluErf, kGeluTanh, kResidual };

// Row strides, in elements, of a linear's input a and of its residual when their rows lie inside
// a larger tensor (the last block reads the class tokens of x (B, T, D) in place, stride T * D);
// 0 means dense: K for a, N for the residual. The output is always dense (M, N).
struct RowStrides {
  long long a = 0, residual = 0;
};

}  // namespace polyvit_cuda
