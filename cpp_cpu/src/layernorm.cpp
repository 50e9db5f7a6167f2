// layernorm.cpp — y = (x - mean) / sqrt(var + eps) * w + b over each row, biased variance.
//
// Two passes over the row (mean, then the centred sum of squares): the one-pass formula
// E[x^2] - E[x]^2 cancels badly when the mean is large against the spread. Rows are short
// (hundreds to a few thousand floats) and stay in L1 between the passes.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {

void layernorm(const float* x, long ldx, float* y, long ldy, int rows, int c, const float* w,
               const float* b, float eps) {
  const int full = c / W * W, tail = c - full;
  for (int i = 0; i < rows; ++i) {
    const float* xr = x + i * ldx;
    float* yr = y + i * ldy;

    V s0 = zero(), s1 = zero();  // two chains: the adds are latency bound otherwise
    int j = 0;
    for (; j + 2 * W <= full; j += 2 * W) {
      s0 = add(s0, load(xr + j));
      s1 = add(s1, load(xr + j + W));
    }
    if (j < full) s0 = add(s0, load(xr + j));
    if (tail) s1 = add(s1, load_n(xr + full, tail));
    const float mean = reduce_add(add(s0, s1)) / static_cast<float>(c);

    const V m = set1(mean);
    V q0 = zero(), q1 = zero();
    for (j = 0; j + 2 * W <= full; j += 2 * W) {
      const V d0 = sub(load(xr + j), m), d1 = sub(load(xr + j + W), m);
      q0 = fma(d0, d0, q0);
      q1 = fma(d1, d1, q1);
    }
    if (j < full) {
      const V d = sub(load(xr + j), m);
      q0 = fma(d, d, q0);
    }
    float var = reduce_add(add(q0, q1));
    for (j = full; j < c; ++j) var += (xr[j] - mean) * (xr[j] - mean);  // tail, scalar
    const float rstd = 1.0f / __builtin_sqrtf(var / static_cast<float>(c) + eps);

    const V rs = set1(rstd);
    for (j = 0; j < full; j += W) {
      const V n = mul(sub(load(xr + j), m), rs);
      store(yr + j, fma(n, load(w + j), load(b + j)));
    }
    if (tail) {
      const V n = mul(sub(load_n(xr + full, tail), m), rs);
      store_n(yr + full, fma(n, load_n(w + full, tail), load_n(b + full, tail)), tail);
    }
  }
}

}  // namespace polyvit::cpu::PV_ISA
