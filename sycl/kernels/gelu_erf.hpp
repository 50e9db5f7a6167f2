// Exact GELU, x * Phi(x), on a float or a sycl::vec: used by the bias + GELU kernel and the GEMM
// epilogue.
#pragma once
#include "common.hpp"

template <typename T>
inline T gelu_erf(T x) {
    return 0.5f * x * (1.0f + sycl::erf(x * 0.70710678118654752f));  // x / sqrt(2)
}
