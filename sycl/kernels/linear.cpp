// y (M, N) = x (M, K) @ w^T + bias, then an epilogue (none, GELU erf/tanh, + residual).
//
// The weight w (N, K) is packed once at load into column panels wp (ceil(N/64), K, 64), zero
// padded: 16 neighbouring work-items (one SIMD vector on a CPU device) then read 16 consecutive
// floats of a panel row, and each x value they share is one broadcast. Each work-item keeps a
// ROWS x COLS register block: ROWS rows of x against COLS vectors of the panel.
#include "gelu_erf.hpp"
#include "gelu_tanh.hpp"

namespace linear {

constexpr int LANES = 16;             // work-items across a panel row
constexpr int COLS = 4;               // vectors per work-item: panel width 64
constexpr int ROWS = 6;               // rows of x per work-item
constexpr int PANEL = LANES * COLS;

enum class Epilogue { none, gelu_erf, gelu_tanh, residual };

// range (ceil(M / ROWS), ceil(N / PANEL) * LANES), local (1, LANES)
template <Epilogue E>
inline void gemm(const float *x, const float *wp, const float *bias, const float *residual,
                 float *y, int M, int N, int K) {
    auto it = work_item2();
    const int lane = static_cast<int>(it.get_local_id(1));
    const int panel = static_cast<int>(it.get_group(1));
    const int m0 = static_cast<int>(it.get_global_id(0)) * ROWS;
    const float *w = wp + static_cast<size_t>(panel) * K * PANEL + lane;  // (K, 64) panel
    // rows past M re-read the last row (a uniform load) and are not stored
    const float *xr[ROWS];
    for (int r = 0; r < ROWS; ++r)
        xr[r] = x + static_cast<size_t>(sycl::min(m0 + r, M - 1)) * K;

    float acc[ROWS][COLS] = {};
    for (int k = 0; k < K; ++k) {
        float wv[COLS];
        for (int c = 0; c < COLS; ++c) wv[c] = w[static_cast<size_t>(k) * PANEL + c * LANES];
        for (int r = 0; r < ROWS; ++r) {
            const float a = xr[r][k];
            for (int c = 0; c < COLS; ++c) acc[r][c] = sycl::fma(a, wv[c], acc[r][c]);
        }
    }

    for (int c = 0; c < COLS; ++c) {
        const int n = panel * PANEL + c * LANES + lane;
        if (n >= N) continue;
        const float b = bias[n];
        for (int r = 0; r < ROWS && m0 + r < M; ++r) {
            const size_t at = static_cast<size_t>(m0 + r) * N + n;
            float v = acc[r][c] + b;
            if constexpr (E == Epilogue::gelu_erf) v = gelu_erf(v);
            if constexpr (E == Epilogue::gelu_tanh) v = gelu_tanh(v);
            if constexpr (E == Epilogue::residual) v += residual[at];  // residual may be y
            y[at] = v;
        }
    }
}

}  // namespace linear

// ---- entry points, one per epilogue -------------------------------------------------------------

POLYVIT_KERNEL(2) linear_bias(const float *x, const float *wp, const float *bias, float *y,
                              int M, int N, int K) {
    linear::gemm<linear::Epilogue::none>(x, wp, bias, nullptr, y, M, N, K);
}

POLYVIT_KERNEL(2) linear_bias_gelu_erf(const float *x, const float *wp, const float *bias,
                                       float *y, int M, int N, int K) {
    linear::gemm<linear::Epilogue::gelu_erf>(x, wp, bias, nullptr, y, M, N, K);
}

POLYVIT_KERNEL(2) linear_bias_gelu_tanh(const float *x, const float *wp, const float *bias,
                                        float *y, int M, int N, int K) {
    linear::gemm<linear::Epilogue::gelu_tanh>(x, wp, bias, nullptr, y, M, N, K);
}

POLYVIT_KERNEL(2) linear_bias_residual(const float *x, const float *wp, const float *bias,
                                       const float *residual, float *y, int M, int N, int K) {
    linear::gemm<linear::Epilogue::residual>(x, wp, bias, residual, y, M, N, K);
}
