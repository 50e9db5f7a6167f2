// to_bf16.cpp — fp32 rows to bf16 rows (round to nearest even), zero-padded to cp columns:
// the A operand of the bf16 GEMM.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx512_bf16 {

void to_bf16(const float* x, long ldx, uint16_t* y, long ldy, int rows, int c, int cp) {
  for (int i = 0; i < rows; ++i) {
    const float* xr = x + i * ldx;
    uint16_t* yr = y + i * ldy;
    for (int j = 0; j < cp; j += W) {
      const int n = imin(W, c - j), m = imin(W, cp - j);  // real and stored lanes
      const V v = n >= W ? load(xr + j) : n > 0 ? load_n(xr + j, n) : zero();
      _mm256_mask_storeu_epi16(yr + j, (__mmask16)lanes(m), (__m256i)_mm512_cvtneps_pbh(v.v));
    }
  }
}

}  // namespace polyvit::cpu::avx512_bf16
