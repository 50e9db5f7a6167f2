// The element-wise tail of a linear, shared by the linear kernels and the standalone bias-GELU:
// one definition of each GELU, so the fused and unfused paths compute the same function.
#pragma once

#include "common.cuh"

namespace polyvit_cuda {

// Exact GELU, x * Phi(x), with erff (max 2 ulp): not the tanh fit of Megatron's fused kernel.
__device__ __forceinline__ float gelu_erf(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}

// The tanh approximation (the original JAX ViT's default); tanhf, not the fast tanh.approx.
__device__ __forceinline__ float gelu_tanh(float x) {
  const float inner = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanhf(inner));
}

// acc is one element of a @ w^T at column n; residual[residual_index] is what kResidual adds
// (residual may be null otherwise).
__device__ __forceinline__ float apply_epilogue(float acc, const float* bias, const float* residual,
                                                size_t residual_index, int n, Epilogue epilogue) {
  float v = bias ? acc + bias[n] : acc;
  switch (epilogue) {
    case Epilogue::kGeluErf: return gelu_erf(v);
    case Epilogue::kGeluTanh: return gelu_tanh(v);
    case Epilogue::kResidual: return v + residual[residual_index];
    default: return v;
  }
}

}  // namespace polyvit_cuda
