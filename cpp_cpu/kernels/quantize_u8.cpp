// quantize_u8.cpp — per-row asymmetric u8 quantisation of activations for the int8 GEMM:
// scale = (max - min) / 255, zero = round(-min / scale), q = clamp(round(x / scale) + zero).
// The range always includes 0, so zero is exact and a row of zeros stays zeros.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx512_vnni {

void quantize(const float* x, long ldx, uint8_t* q, long ldq, float* scale, int32_t* zero_point,
              int rows, int c, int cp) {
  const int full = c / W * W, tail = c - full;
  for (int i = 0; i < rows; ++i) {
    const float* xr = x + i * ldx;
    uint8_t* qr = q + i * ldq;
    V lo = zero(), hi = zero();  // start at 0: the range includes it
    for (int j = 0; j < full; j += W) {
      const V v = load(xr + j);
      lo = min(lo, v);
      hi = max(hi, v);
    }
    if (tail) {
      const V v = load_n(xr + full, tail);
      lo = min(lo, v);
      hi = max(hi, v);
    }
    const float mn = -reduce_max(sub(zero(), lo)), mx = reduce_max(hi);
    const float s = mx > mn ? (mx - mn) / 255.0f : 1.0f;
    const int32_t z = static_cast<int32_t>(__builtin_nearbyintf(-mn / s));
    scale[i] = s;
    zero_point[i] = z;

    const V inv = set1(1.0f / s);
    const __m512i zv = _mm512_set1_epi32(z), lo8 = _mm512_setzero_si512(),
                  hi8 = _mm512_set1_epi32(255);
    for (int j = 0; j < cp; j += W) {
      const int n = imin(W, c - j), m = imin(W, cp - j);  // real and stored lanes
      const V v = n >= W ? load(xr + j) : n > 0 ? load_n(xr + j, n) : zero();
      __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(mul(v, inv).v), zv);
      u = _mm512_min_epi32(_mm512_max_epi32(u, lo8), hi8);
      _mm_mask_storeu_epi8(qr + j, lanes(m), _mm512_cvtepi32_epi8(u));
    }
  }
}

}  // namespace polyvit::cpu::avx512_vnni
