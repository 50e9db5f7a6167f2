// out (B, Q, D) = softmax(q k^T / sqrt(hd)) v for each (batch, head): the first Q queries of each
// image against all T keys and values. Q = T in every block but the last; the last runs for the
// class token only (Q = 1), since the head reads nothing else.
//
// Where the rows are: query i of image b at q + (b * Q + i) * q_stride, key j at
// kv + (b * T + j) * kv_stride and its value D floats after the key. For packed qkv (B, T, 3D):
// q = qkv, kv = qkv + D, both strides 3D; for the last block q (B, D) and kv (B, T, 2D).
//
// attention_vec (head dim a multiple of 16, every ViT preset): each work-item takes QUERIES
// queries of one (batch, head) and holds their q rows and output rows in sycl::vec registers, so
// every key and value row it loads serves them all. Scores go through a per-work-item scratch row
// of Tpad = roundup(T, 16) floats, padded with -inf so the softmax runs on whole vectors.
// attention (any head dim): one query per work-item, scalar, for the head dims the vector path
// does not cover.
#include "common.hpp"

namespace attention_vec {

constexpr int QB = POLYVIT_QUERIES;  // queries per work-item
constexpr int V = POLYVIT_VECTOR;

// HV: vectors per head (head dim 16 * HV)
template <int HV>
inline void run(const float *q, const float *kv, float *out, float *scratch, int T, int Q, int H,
                int q_stride, int kv_stride) {
    auto it = work_item2();
    const int bh = static_cast<int>(it.get_global_id(0));
    const int block = static_cast<int>(it.get_global_id(1));
    const int b = bh / H, h = bh % H, i0 = block * QB;
    constexpr int hd = V * HV;
    const int D = H * hd, tpad = (T + V - 1) / V * V;
    const float *qb = q + static_cast<size_t>(b) * Q * q_stride + h * hd;    // query 0
    const float *kb = kv + static_cast<size_t>(b) * T * kv_stride + h * hd;  // key 0
    const float *vb = kb + D;                                                // value 0
    // this work-item's scores: (QB, Tpad); scratch is (B * H, ceil(Q / QB), QB, Tpad)
    float *s = scratch + (static_cast<size_t>(bh) * it.get_global_range(1) + block) * QB * tpad;
    const float scale = 1.0f / sycl::sqrt(static_cast<float>(hd));

    float top[QB], inv[QB];
    {
        vec16 qr[QB][HV];  // queries past Q repeat the last one and are not stored
        for (int r = 0; r < QB; ++r)
            for (int v = 0; v < HV; ++v)
                qr[r][v] = load16(qb + static_cast<size_t>(sycl::min(i0 + r, Q - 1)) * q_stride +
                                  V * v);
        for (int r = 0; r < QB; ++r) top[r] = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < T; ++j) {
            vec16 k[HV];
            for (int v = 0; v < HV; ++v)
                k[v] = load16(kb + static_cast<size_t>(j) * kv_stride + V * v);
            for (int r = 0; r < QB; ++r) {
                vec16 dot = qr[r][0] * k[0];
                for (int v = 1; v < HV; ++v) dot = sycl::fma(qr[r][v], k[v], dot);
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
        for (int j = 0; j < tpad; j += V) {
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
            val[v] = load16(vb + static_cast<size_t>(j) * kv_stride + V * v);
        for (int r = 0; r < QB; ++r) {
            const vec16 p(s[r * tpad + j]);
            for (int v = 0; v < HV; ++v) acc[r][v] = sycl::fma(p, val[v], acc[r][v]);
        }
    }
    for (int r = 0; r < QB && i0 + r < Q; ++r) {
        float *o = out + (static_cast<size_t>(b) * Q + i0 + r) * D + h * hd;
        for (int v = 0; v < HV; ++v) store16(o + V * v, acc[r][v] * inv[r]);
    }
}

}  // namespace attention_vec

// range (B * H, ceil(Q / QUERIES)), local (1, 1);
// scratch (B * H, ceil(Q / QUERIES) * QUERIES, roundup(T, 16))
#define POLYVIT_ATTENTION_VEC(HD, HV)                                                           \
    POLYVIT_VEC_KERNEL(2) attention_vec##HD(const float *q, const float *kv, float *out,         \
                                            float *scratch, int T, int Q, int H, int q_stride,   \
                                            int kv_stride) {                                     \
        attention_vec::run<HV>(q, kv, out, scratch, T, Q, H, q_stride, kv_stride);              \
    }
POLYVIT_ATTENTION_VEC(16, 1)
POLYVIT_ATTENTION_VEC(32, 2)
POLYVIT_ATTENTION_VEC(64, 4)

// ---- any head dim ------------------------------------------------------------------------------

// range (B * H, Qpad), local (1, lanes) with Qpad = roundup(Q, lanes); scratch (B * H, T, Qpad).
// On a CPU device the lanes are queries: key and value elements are broadcasts and the scores,
// kept as (T, Qpad) columns, are contiguous vectors.
POLYVIT_KERNEL(2) attention(const float *q, const float *kv, float *out, float *scratch, int T,
                            int Q, int H, int q_stride, int kv_stride, int hd) {
    auto it = work_item2();
    const int bh = static_cast<int>(it.get_group(0));
    const int b = bh / H, h = bh % H;
    const int i = static_cast<int>(it.get_global_id(1));
    const int qpad = static_cast<int>(it.get_global_range(1));
    const int D = H * hd;
    const float *qi = q + (static_cast<size_t>(b) * Q + sycl::min(i, Q - 1)) * q_stride + h * hd;
    const float *k = kv + static_cast<size_t>(b) * T * kv_stride + h * hd, *v = k + D;
    float *s = scratch + static_cast<size_t>(bh) * T * qpad + i;  // s[j * qpad]: score of key j
    const float scale = 1.0f / sycl::sqrt(static_cast<float>(hd));

    float top = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < T; ++j) {
        const float *kj = k + static_cast<size_t>(j) * kv_stride;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot = sycl::fma(qi[d], kj[d], dot);
        dot *= scale;
        s[j * qpad] = dot;
        top = sycl::max(top, dot);
    }
    float sum = 0.0f;
    for (int j = 0; j < T; ++j) {
        const float e = sycl::exp(s[j * qpad] - top);
        s[j * qpad] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    if (i >= Q) return;
    float *o = out + (static_cast<size_t>(b) * Q + i) * D + h * hd;
    for (int d = 0; d < hd; ++d) {
        float acc = 0.0f;
        for (int j = 0; j < T; ++j)
            acc = sycl::fma(s[j * qpad], v[static_cast<size_t>(j) * kv_stride + d], acc);
        o[d] = acc * inv;
    }
}
