// y (M, N) = gelu_tanh(x + bias): the standalone bias + GELU op, tanh form.
#include "gelu_tanh.hpp"

// range (M, roundup(N, 16)), local (1, 16)
POLYVIT_KERNEL(2) bias_gelu_tanh(const float *x, const float *bias, float *y, int N) {
    auto it = work_item2();
    const size_t m = it.get_global_id(0);
    const int n = static_cast<int>(it.get_global_id(1));
    if (n < N) y[m * N + n] = gelu_tanh(x[m * N + n] + bias[n]);
}
