// Exact GELU, x * Phi(x): used by the bias + GELU kernel and the GEMM epilogue.
#pragma once
#include "common.hpp"

inline float gelu_erf(float x) {
    return 0.5f * x * (1.0f + sycl::erf(x * 0.70710678118654752f));  // x / sqrt(2)
}
