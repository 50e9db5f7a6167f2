// out (B, T, D) = softmax(q k^T / sqrt(hd)) v for each (batch, head), from packed qkv (B, T, 3D).
//
// Each work-item owns one query row of one (batch, head), so on a CPU device the 16 SIMD lanes
// are 16 queries: key and value elements are broadcasts, and the scores, kept in scratch as
// (T, Tpad) columns, are contiguous vectors.
#include "common.hpp"

// range (B * H, Tpad), local (1, 16) with Tpad = roundup(T, 16); scratch (B * H, T, Tpad)
POLYVIT_KERNEL(2) attention(const float *qkv, float *out, float *scratch, int T, int H, int hd) {
    auto it = work_item2();
    const int bh = static_cast<int>(it.get_group(0));
    const int b = bh / H, h = bh % H;
    const int i = static_cast<int>(it.get_global_id(1));
    const int tpad = static_cast<int>(it.get_global_range(1));
    const int D = H * hd, stride = 3 * D;
    const float *base = qkv + static_cast<size_t>(b) * T * stride + h * hd;
    const float *q = base + static_cast<size_t>(sycl::min(i, T - 1)) * stride;
    const float *k = base + D, *v = base + 2 * D;
    float *s = scratch + static_cast<size_t>(bh) * T * tpad + i;  // s[j * tpad]: score of key j
    const float scale = 1.0f / sycl::sqrt(static_cast<float>(hd));

    float top = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < T; ++j) {
        const float *kj = k + static_cast<size_t>(j) * stride;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot = sycl::fma(q[d], kj[d], dot);
        dot *= scale;
        s[j * tpad] = dot;
        top = sycl::max(top, dot);
    }
    float sum = 0.0f;
    for (int j = 0; j < T; ++j) {
        const float e = sycl::exp(s[j * tpad] - top);
        s[j * tpad] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    if (i >= T) return;
    float *o = out + (static_cast<size_t>(b) * T + i) * D + h * hd;
    for (int d = 0; d < hd; ++d) {
        float acc = 0.0f;
        for (int j = 0; j < T; ++j) acc = sycl::fma(s[j * tpad], v[static_cast<size_t>(j) * stride + d], acc);
        o[d] = acc * inv;
    }
}
