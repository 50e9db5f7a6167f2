// out (B, T, D) = softmax(q k^T / sqrt(hd)) v for each (batch, head), from packed qkv (B, T, 3D).
//
// attention_vec (head dim a multiple of 16, every ViT preset): each work-item takes QB queries of
// one (batch, head) and holds their q rows and output rows in sycl::vec registers, so every key
// and value row it loads serves QB queries. Scores go through a per-work-item scratch row of
// Tpad = roundup(T, 16) floats, padded with -inf so the softmax runs on whole vectors.
// attention (any head dim): one query per work-item, scalar, kept for the head dims the vector
// path does not cover.
#include "common.hpp"

namespace attention_vec {

constexpr int QB = 4;  // queries per work-item

// HV: vectors per head (head dim 16 * HV)
template <int HV>
inline void run(const float *qkv, float *out, float *scratch, int T, int H) {
    auto it = work_item2();
    const int bh = static_cast<int>(it.get_global_id(0));
    const int block = static_cast<int>(it.get_global_id(1));
    const int b = bh / H, h = bh % H, i0 = block * QB;
    constexpr int hd = 16 * HV;
    const int D = H * hd, stride = 3 * D, tpad = (T + 15) / 16 * 16;
    const float *base = qkv + static_cast<size_t>(b) * T * stride + h * hd;  // q of token 0
    // this work-item's scores: (QB, Tpad); scratch is (B * H, ceil(T / QB), QB, Tpad)
    float *s = scratch + (static_cast<size_t>(bh) * it.get_global_range(1) + block) * QB * tpad;
    const float scale = 1.0f / sycl::sqrt(static_cast<float>(hd));

    float top[QB], inv[QB];
    {
        vec16 q[QB][HV];  // queries past T repeat the last one and are not stored
        for (int r = 0; r < QB; ++r)
            for (int v = 0; v < HV; ++v)
                q[r][v] = load16(base + static_cast<size_t>(sycl::min(i0 + r, T - 1)) * stride +
                                 16 * v);
        for (int r = 0; r < QB; ++r) top[r] = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < T; ++j) {
            vec16 k[HV];
            for (int v = 0; v < HV; ++v) k[v] = load16(base + D + static_cast<size_t>(j) * stride + 16 * v);
            for (int r = 0; r < QB; ++r) {
                vec16 dot = q[r][0] * k[0];
                for (int v = 1; v < HV; ++v) dot = sycl::fma(q[r][v], k[v], dot);
                const float score = sum16(dot) * scale;
                s[r * tpad + j] = score;
                top[r] = sycl::max(top[r], score);
            }
        }
    }
    for (int r = 0; r < QB; ++r) {
        float *row = s + r * tpad;
        for (int j = T; j < tpad; ++j) row[j] = -std::numeric_limits<float>::infinity();
        vec16 sum(0.0f);
        for (int j = 0; j < tpad; j += 16) {
            const vec16 e = sycl::exp(load16(row + j) - top[r]);
            store16(row + j, e);
            sum += e;
        }
        inv[r] = 1.0f / sum16(sum);
    }

    vec16 acc[QB][HV];
    for (int r = 0; r < QB; ++r)
        for (int v = 0; v < HV; ++v) acc[r][v] = 0.0f;
    for (int j = 0; j < T; ++j) {
        vec16 val[HV];
        for (int v = 0; v < HV; ++v)
            val[v] = load16(base + 2 * D + static_cast<size_t>(j) * stride + 16 * v);
        for (int r = 0; r < QB; ++r) {
            const vec16 p(s[r * tpad + j]);
            for (int v = 0; v < HV; ++v) acc[r][v] = sycl::fma(p, val[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB && i0 + r < T; ++r) {
        float *o = out + (static_cast<size_t>(b) * T + i0 + r) * D + h * hd;
        for (int v = 0; v < HV; ++v) store16(o + 16 * v, acc[r][v] * inv[r]);
    }
}

}  // namespace attention_vec

// range (B * H, ceil(T / 4)), local (1, 1); scratch (B * H, ceil(T / 4) * 4, roundup(T, 16))
POLYVIT_VEC_KERNEL(2) attention_vec16(const float *qkv, float *out, float *scratch, int T, int H) {
    attention_vec::run<1>(qkv, out, scratch, T, H);
}
POLYVIT_VEC_KERNEL(2) attention_vec32(const float *qkv, float *out, float *scratch, int T, int H) {
    attention_vec::run<2>(qkv, out, scratch, T, H);
}
POLYVIT_VEC_KERNEL(2) attention_vec64(const float *qkv, float *out, float *scratch, int T, int H) {
    attention_vec::run<4>(qkv, out, scratch, T, H);
}

// ---- any head dim ------------------------------------------------------------------------------

// range (B * H, Tpad), local (1, 16) with Tpad = roundup(T, 16); scratch (B * H, T, Tpad).
// On a CPU device the 16 lanes are 16 queries: key and value elements are broadcasts and the
// scores, kept as (T, Tpad) columns, are contiguous vectors.
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
        for (int j = 0; j < T; ++j)
            acc = sycl::fma(s[j * tpad], v[static_cast<size_t>(j) * stride + d], acc);
        o[d] = acc * inv;
    }
}
