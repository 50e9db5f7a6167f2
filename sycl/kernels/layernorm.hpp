// One row of LayerNorm, computed by one work-group whose work-items stride over the row.
// Two passes (mean, then the mean of squared deviations) because the one-pass formula loses
// digits when the mean is large against the spread.
#pragma once
#include "common.hpp"

// x (C,) -> y (C,); y may be x. Every work-item of the group must call it.
inline void layernorm_row(const sycl::nd_item<2> &it, const float *x, float *y, const float *w,
                          const float *b, int C, float eps) {
    const auto group = it.get_group();
    const int lane = static_cast<int>(it.get_local_id(1));
    const int lanes = static_cast<int>(it.get_local_range(1));
    float sum = 0.0f;
    for (int c = lane; c < C; c += lanes) sum += x[c];
    const float mean = sycl::reduce_over_group(group, sum, sycl::plus<float>()) / C;
    float squares = 0.0f;
    for (int c = lane; c < C; c += lanes) {
        const float d = x[c] - mean;
        squares += d * d;
    }
    const float var = sycl::reduce_over_group(group, squares, sycl::plus<float>()) / C;
    const float rstd = 1.0f / sycl::sqrt(var + eps);
    for (int c = lane; c < C; c += lanes) y[c] = (x[c] - mean) * rstd * w[c] + b[c];
}
