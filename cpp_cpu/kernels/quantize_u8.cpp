// quantize_u8.cpp — per-row asymmetric u8 quantisation of activations for the int8 GEMM:
// scale = (max - min) / 255, zero = round(-min / scale), q = clamp(round(x / scale) + zero).
// The range always includes 0, so zero is exact and a row of zeros stays zeros.
//
// Compiled once per int8 kernel set (avx512_vnni, avx2, generic; PV_ISA names the namespace).
// Every step is exact or one IEEE operation (min/max, the float divisions, x * (1 / scale),
// round to nearest even), and the min and max do not depend on the order they are taken in,
// so every set gives every row the same scale, zero point and bytes: the int8 GEMMs then see
// the same operands whatever the vector width. Rounding happens in float and the zero point is
// added in float (both integers below 2^24: exact) before the clamp, so a NaN becomes 0.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {
namespace {

// The first n lanes of x, whole numbers in [0, 255], as bytes at q.
inline void store_u8(uint8_t* q, V x, int n) {
#if defined(__AVX512F__)
  _mm_mask_storeu_epi8(q, lanes(n), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(x.v)));
#elif defined(__AVX2__)
  const __m256i i32 = _mm256_cvtps_epi32(x.v);
  const __m128i u16 = _mm_packus_epi32(_mm256_castsi256_si128(i32),
                                       _mm256_extracti128_si256(i32, 1));
  const __m128i u8 = _mm_packus_epi16(u16, u16);  // bytes 0..7 are the 8 lanes
  if (n == W) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q), u8);
  } else {
    uint8_t bytes[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bytes), u8);
    for (int l = 0; l < n; ++l) q[l] = bytes[l];
  }
#else
  for (int l = 0; l < n; ++l) q[l] = static_cast<uint8_t>(x.v[l]);
#endif
}

}  // namespace

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

    // padding columns (c <= j < cp) quantise 0, i.e. hold z: their weights are 0
    const V inv = set1(1.0f / s), zv = set1(static_cast<float>(z)), q0 = zero(),
            q255 = set1(255.0f);
    for (int j = 0; j < cp; j += W) {
      const int n = imin(W, c - j), m = imin(W, cp - j);  // real and stored lanes
      const V v = n >= W ? load(xr + j) : n > 0 ? load_n(xr + j, n) : zero();
      store_u8(qr + j, min(max(add(round_nearest(mul(v, inv)), zv), q0), q255), m);
    }
  }
}

}  // namespace polyvit::cpu::PV_ISA
