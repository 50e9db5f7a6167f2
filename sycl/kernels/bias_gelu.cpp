// y (M, N) = gelu(x + bias), erf or tanh form: the standalone bias + GELU op (the forward fuses
// it into the GEMM's epilogue instead).
#include "bias_gelu.hpp"

// range (M, roundup(N, lanes)), local (1, lanes)
template <typename Gelu>
inline void bias_gelu(const float *x, const float *bias, float *y, int N, Gelu gelu) {
    auto it = work_item2();
    const size_t m = it.get_global_id(0);
    const int n = static_cast<int>(it.get_global_id(1));
    if (n < N) y[m * N + n] = gelu(x[m * N + n] + bias[n]);
}

POLYVIT_KERNEL(2) bias_gelu_erf(const float *x, const float *bias, float *y, int N) {
    bias_gelu(x, bias, y, N, [](float v) { return gelu_erf(v); });
}

POLYVIT_KERNEL(2) bias_gelu_tanh(const float *x, const float *bias, float *y, int N) {
    bias_gelu(x, bias, y, N, [](float v) { return gelu_tanh(v); });
}
