// y (M, C) = LayerNorm(x) * weight + bias over each row.
#include "layernorm.hpp"

// range (M, 16), local (1, 16): one work-group per row
POLYVIT_KERNEL(2) layernorm(const float *x, const float *weight, const float *bias, float *y,
                            int C, float eps) {
    auto it = work_item2();
    const size_t row = it.get_group(0);
    layernorm_row(it, x + row * C, y + row * C, weight, bias, C, eps);
}
