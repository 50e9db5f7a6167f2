// bias_gelu.cpp — y = gelu(x + bias), erf or tanh form, over rows of width n.
//
// The forward pass fuses this into the fc1 GEMM's epilogue (linear_f32.cpp); this standalone
// form is the op-level entry and shares the same vector math (simd.h).
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {

void bias_gelu(const float* x, float* y, long ld, int rows, int n, const float* bias, int form) {
  const int full = n / W * W, tail = n - full;
  for (int i = 0; i < rows; ++i) {
    const float* xr = x + i * ld;
    float* yr = y + i * ld;
    for (int j = 0; j < full; j += W) {
      const V v = add(load(xr + j), load(bias + j));
      store(yr + j, form == 0 ? gelu_erf(v) : gelu_tanh(v));
    }
    if (tail) {
      const V v = add(load_n(xr + full, tail), load_n(bias + full, tail));
      store_n(yr + full, form == 0 ? gelu_erf(v) : gelu_tanh(v), tail);
    }
  }
}

}  // namespace polyvit::cpu::PV_ISA
