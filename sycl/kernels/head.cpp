// The classifier's input: the final LayerNorm of each image's class token, x (B, T, D) ->
// (B, D). LayerNorm is per token, so normalising only the class token equals timm's
// norm-then-pool. The head's GEMM is linear_bias (linear.cpp).
#include "layernorm.hpp"

// range (B, 16), local (1, 16): one work-group per image
POLYVIT_KERNEL(2) class_token_norm(const float *x, const float *weight, const float *bias,
                                   float *y, int T, int D, float eps) {
    auto it = work_item2();
    const size_t b = it.get_group(0);
    layernorm_row(it, x + b * T * D, y + b * D, weight, bias, D, eps);
}
