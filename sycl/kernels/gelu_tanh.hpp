// The tanh approximation of GELU (the original JAX ViT's default), on a float or a sycl::vec.
#pragma once
#include "common.hpp"

template <typename T>
inline T gelu_tanh(T x) {
    const float k = 0.79788456080286536f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + sycl::tanh(k * (x + 0.044715f * x * x * x)));
}
