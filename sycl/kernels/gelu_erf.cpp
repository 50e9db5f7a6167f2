// y (M, N) = gelu_erf(x + bias): the standalone bias + GELU op (the forward fuses it into the GEMM).
#include "gelu_erf.hpp"

// range (M, roundup(N, 16)), local (1, 16)
POLYVIT_KERNEL(2) bias_gelu_erf(const float *x, const float *bias, float *y, int N) {
    auto it = work_item2();
    const size_t m = it.get_global_id(0);
    const int n = static_cast<int>(it.get_global_id(1));
    if (n < N) y[m * N + n] = gelu_erf(x[m * N + n] + bias[n]);
}
