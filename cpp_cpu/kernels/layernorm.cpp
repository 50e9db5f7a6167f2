// layernorm.cpp — y = (x - mean) / sqrt(var + eps) * w + b over each row, biased variance.
//
// Two passes over the row (mean, then the centred sum of squares): the one-pass formula
// E[x^2] - E[x]^2 cancels badly when the mean is large against the spread. Rows are short
// (hundreds to a few thousand floats) and stay in L1 between the passes. Compiled once per
// ISA, and once more with AVX512_BF16 for the bf16-output form that feeds a bf16 GEMM.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {
namespace {

// store(i, j, y, n) writes the n valid lanes of vector y at column j of output row i.
template <class Store>
void layernorm_rows(const float* x, long ldx, int rows, int c, const float* w, const float* b,
                    float eps, Store&& store) {
  const int full = c / W * W, tail = c - full;
  for (int i = 0; i < rows; ++i) {
    const float* xr = x + i * ldx;

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
      store(i, j, fma(n, load(w + j), load(b + j)), W);
    }
    if (tail) {
      const V n = mul(sub(load_n(xr + full, tail), m), rs);
      store(i, full, fma(n, load_n(w + full, tail), load_n(b + full, tail)), tail);
    }
  }
}

}  // namespace

#if defined(__AVX512BF16__)
void layernorm_bf16(const float* x, long ldx, uint16_t* y, long ldy, int rows, int c, int cp,
                    const float* w, const float* b, float eps) {
  layernorm_rows(x, ldx, rows, c, w, b, eps, [&](int i, int j, V v, int n) {
    // the last vector also writes the zero padding up to cp
    const int m = n == W ? W : imin(W, cp - j);
    const V z = n == W ? v : V{_mm512_maskz_mov_ps(lanes(n), v.v)};
    _mm256_mask_storeu_epi16(y + i * ldy + j, lanes(m), (__m256i)_mm512_cvtneps_pbh(z.v));
  });
  for (int i = 0; i < rows && c % W == 0; ++i)  // padding past a whole last vector
    for (int j = c; j < cp; ++j) y[i * ldy + j] = 0;
}
#else
void layernorm(const float* x, long ldx, float* y, long ldy, int rows, int c, const float* w,
               const float* b, float eps) {
  layernorm_rows(x, ldx, rows, c, w, b, eps, [&](int i, int j, V v, int n) {
    if (n == W) store(y + i * ldy + j, v);
    else store_n(y + i * ldy + j, v, n);
  });
}
#endif

}  // namespace polyvit::cpu::PV_ISA
