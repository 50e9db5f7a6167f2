// Patch embedding around the projection GEMM (linear.cpp):
//   patch_im2col:  images (B, C, S, S) -> patches (B * N, C * P * P), each patch flattened in
//                  (c, ph, pw) order, optionally LayerNorm-ed over that row (patch_norm_pre);
//   embed_tokens:  proj (B * N, D) -> x (B, T, D): class token first, optionally LayerNorm over
//                  each patch embedding (patch_norm_post), plus the position embedding.
#include "layernorm.hpp"

// range (B * N, 16), local (1, 16): one work-group per patch
POLYVIT_KERNEL(2) patch_im2col(const float *images, float *patches, const float *norm_w,
                               const float *norm_b, int C, int S, int P, int norm, float eps) {
    auto it = work_item2();
    const int row = static_cast<int>(it.get_group(0));
    const int lane = static_cast<int>(it.get_local_id(1));
    const int lanes = static_cast<int>(it.get_local_range(1));
    const int grid = S / P, n_patches = grid * grid;
    const int b = row / n_patches, gy = (row % n_patches) / grid, gx = row % grid;
    const int len = C * P * P;
    float *dst = patches + static_cast<size_t>(row) * len;
    // lanes run along pw, the contiguous axis of both layouts (no per-element index division)
    for (int c = 0; c < C; ++c)
        for (int ph = 0; ph < P; ++ph) {
            const float *src = images + ((static_cast<size_t>(b) * C + c) * S + gy * P + ph) * S +
                               gx * P;
            float *out = dst + (c * P + ph) * P;
            for (int pw = lane; pw < P; pw += lanes) out[pw] = src[pw];
        }
    if (norm) {
        sycl::group_barrier(it.get_group());  // the norm reads what other work-items wrote
        layernorm_row(it, dst, dst, norm_w, norm_b, len, eps);
    }
}

// range (B * T, 16), local (1, 16): one work-group per token
POLYVIT_KERNEL(2) embed_tokens(const float *proj, const float *cls, const float *pos, float *x,
                               const float *norm_w, const float *norm_b, int T, int D, int norm,
                               float eps) {
    auto it = work_item2();
    const int row = static_cast<int>(it.get_group(0));
    const int lane = static_cast<int>(it.get_local_id(1));
    const int lanes = static_cast<int>(it.get_local_range(1));
    const int b = row / T, t = row % T;
    float *dst = x + static_cast<size_t>(row) * D;
    const float *p = pos + static_cast<size_t>(t) * D;
    if (t == 0) {
        for (int d = lane; d < D; d += lanes) dst[d] = cls[d] + p[d];
        return;
    }
    const float *src = proj + (static_cast<size_t>(b) * (T - 1) + t - 1) * D;
    if (norm) {
        layernorm_row(it, src, dst, norm_w, norm_b, D, eps);
        for (int d = lane; d < D; d += lanes) dst[d] += p[d];
    } else {
        for (int d = lane; d < D; d += lanes) dst[d] = src[d] + p[d];
    }
}
