// y (M, N) = x (M, K) @ w^T + bias, then an epilogue (none, GELU erf/tanh, + residual).
//
// The weight w (N, K) is packed once at load into column panels wp (ceil(N / PANEL), K, PANEL),
// zero padded, so one k step of a panel is PANEL / 16 aligned 16-float vectors. Panels hold fp32,
// or bf16 or fp16 (the bf16/fp16 precisions: half the weight memory, widened to fp32 as they
// load, so x, the accumulation and the epilogue stay fp32).
// Each work-item computes a ROWS x PANEL block of y in explicit sycl::vec registers: per k it
// loads PANEL / 16 weight vectors and broadcasts ROWS values of x into as many FMAs each.
// PANEL and ROWS come from the backend (common.hpp). Explicit vectors, one work-item per block,
// because the OpenCL CPU compiler's own vectorisation across work-items of the same loop ran
// 5x slower here (it did not keep the block in registers).
#include "bias_gelu.hpp"

namespace linear {

using vec = vec16;
constexpr int LANES = POLYVIT_VECTOR;     // floats per vector
constexpr int PANEL = POLYVIT_PANEL;      // outputs per weight panel
constexpr int ROWS = POLYVIT_ROWS;        // rows of x per work-item
constexpr int COLS = PANEL / LANES;       // vectors per panel row
static_assert(PANEL % LANES == 0, "a panel is whole vectors");

enum class Epilogue { none, gelu_erf, gelu_tanh, residual };

// Panel loaders: vector i of the packed panels, as fp32.
struct PanelsF32 {
    const float *p;
    vec operator()(size_t i) const { return load16(p + LANES * i); }
};
struct PanelsBF16 {  // bf16 is the high half of an fp32
    const uint16_t *p;
    vec operator()(size_t i) const {
        const auto bits = reinterpret_cast<const sycl::vec<uint16_t, LANES> *>(p)[i];
        return (bits.convert<uint32_t>() << 16).as<vec>();
    }
};
#ifdef POLYVIT_WEIGHTS_FP16
struct PanelsF16 {
    const sycl::half *p;
    vec operator()(size_t i) const {
        return reinterpret_cast<const sycl::vec<sycl::half, LANES> *>(p)[i].convert<float>();
    }
};
#endif

// range (ceil(N / PANEL), ceil(M / ROWS)), local (1, 1)
template <Epilogue E, typename Panels>
inline void gemm(const float *x, Panels wp, const float *bias, const float *residual,
                 float *y, int M, int N, int K) {
    auto it = work_item2();
    const int panel = static_cast<int>(it.get_global_id(0));
    const int m0 = static_cast<int>(it.get_global_id(1)) * ROWS;
    const size_t first = static_cast<size_t>(panel) * K * COLS;  // this panel's first vector
    // rows past M re-read the last row and are not stored
    const float *xr[ROWS];
    for (int r = 0; r < ROWS; ++r)
        xr[r] = x + static_cast<size_t>(sycl::min(m0 + r, M - 1)) * K;

    vec acc[ROWS][COLS];
    for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < COLS; ++c) acc[r][c] = 0.0f;
    for (int k = 0; k < K; ++k) {
        vec wv[COLS];
        for (int c = 0; c < COLS; ++c) wv[c] = wp(first + static_cast<size_t>(k) * COLS + c);
        for (int r = 0; r < ROWS; ++r) {
            const vec a(xr[r][k]);
            for (int c = 0; c < COLS; ++c) acc[r][c] = sycl::fma(a, wv[c], acc[r][c]);
        }
    }

    for (int c = 0; c < COLS; ++c) {
        const int n0 = panel * PANEL + c * LANES;
        if (n0 >= N) break;
        const int width = sycl::min(LANES, N - n0);
        vec b(0.0f);
        for (int l = 0; l < width; ++l) b[l] = bias[n0 + l];
        for (int r = 0; r < ROWS && m0 + r < M; ++r) {
            const size_t at = static_cast<size_t>(m0 + r) * N + n0;
            vec v = acc[r][c] + b;
            if constexpr (E == Epilogue::gelu_erf) v = gelu_erf(v);
            if constexpr (E == Epilogue::gelu_tanh) v = gelu_tanh(v);
            // residual may be y itself: each element is read, then written, by this work-item
            if constexpr (E == Epilogue::residual)
                for (int l = 0; l < width; ++l) v[l] += residual[at + l];
            for (int l = 0; l < width; ++l) y[at + l] = v[l];
        }
    }
}

}  // namespace linear

// ---- entry points, one per epilogue and weight type -------------------------------------------

#define POLYVIT_LINEAR(SUFFIX, T, PANELS)                                                        \
    POLYVIT_VEC_KERNEL(2) linear_bias##SUFFIX(const float *x, const T *wp, const float *bias,    \
                                              float *y, int M, int N, int K) {                   \
        linear::gemm<linear::Epilogue::none>(x, PANELS{wp}, bias, nullptr, y, M, N, K);        \
    }                                                                                            \
    POLYVIT_VEC_KERNEL(2) linear_bias_gelu_erf##SUFFIX(const float *x, const T *wp,             \
                                                       const float *bias, float *y, int M,       \
                                                       int N, int K) {                           \
        linear::gemm<linear::Epilogue::gelu_erf>(x, PANELS{wp}, bias, nullptr, y, M, N, K);    \
    }                                                                                            \
    POLYVIT_VEC_KERNEL(2) linear_bias_gelu_tanh##SUFFIX(const float *x, const T *wp,            \
                                                        const float *bias, float *y, int M,      \
                                                        int N, int K) {                          \
        linear::gemm<linear::Epilogue::gelu_tanh>(x, PANELS{wp}, bias, nullptr, y, M, N, K);   \
    }                                                                                            \
    POLYVIT_VEC_KERNEL(2) linear_bias_residual##SUFFIX(const float *x, const T *wp,             \
                                                       const float *bias, const float *residual, \
                                                       float *y, int M, int N, int K) {          \
        linear::gemm<linear::Epilogue::residual>(x, PANELS{wp}, bias, residual, y, M, N, K);   \
    }

// One weight type per program (the backend builds one per precision in use): each set of four
// GEMMs adds seconds to the first build.
#if defined(POLYVIT_WEIGHTS_BF16)
POLYVIT_LINEAR(_bf16, uint16_t, linear::PanelsBF16)
#elif defined(POLYVIT_WEIGHTS_FP16)  // only on devices with the fp16 aspect
POLYVIT_LINEAR(_fp16, sycl::half, linear::PanelsF16)
#else
POLYVIT_LINEAR(, float, linear::PanelsF32)
#endif
