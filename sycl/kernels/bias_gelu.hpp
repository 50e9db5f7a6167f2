// GELU on a float or a sycl::vec, in both forms a config may name: used by the bias + GELU kernel
// (bias_gelu.cpp) and the GEMM epilogue (linear.cpp).
#pragma once
#include "common.hpp"

// Exact GELU, x * Phi(x) (timm, HF and the seed checkpoint)
template <typename T>
inline T gelu_erf(T x) {
    return 0.5f * x * (1.0f + sycl::erf(x * 0.70710678118654752f));  // x / sqrt(2)
}

// The tanh approximation (the original JAX ViT's default)
template <typename T>
inline T gelu_tanh(T x) {
    const float k = 0.79788456080286536f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + sycl::tanh(k * (x + 0.044715f * x * x * x)));
}
