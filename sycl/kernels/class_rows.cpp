// y (B, C) = x[:, 0] of x (B, T, C): each image's class-token row. The last block runs for the
// class token only (the head reads nothing else), so its queries, its residual stream and
// everything after its attention use these B rows.
#include "common.hpp"

// range (B, lanes), local (1, lanes): one work-group per image
POLYVIT_KERNEL(2) class_rows(const float *x, float *y, int T, int C) {
    auto it = work_item2();
    const size_t b = it.get_group(0);
    const int lane = static_cast<int>(it.get_local_id(1));
    const int lanes = static_cast<int>(it.get_local_range(1));
    for (int c = lane; c < C; c += lanes) y[b * C + c] = x[b * T * C + c];
}
