// simd.h — one float vector type per instruction set, picked by the flags of the file that
// includes it (each kernel file is compiled once per ISA, see CMakeLists.txt).
//
// Everything here is in an anonymous namespace on purpose: the same inline function compiled
// with -mavx512f in one object and without it in another must not be merged by the linker,
// or the baseline path could end up running AVX-512 code.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// ---- vector type -------------------------------------------------------------------------------

#if defined(__AVX512F__)

constexpr int W = 16;  // floats per vector
struct V { __m512 v; };
inline V zero() { return {_mm512_setzero_ps()}; }
inline V set1(float x) { return {_mm512_set1_ps(x)}; }
inline V load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, V x) { _mm512_storeu_ps(p, x.v); }
inline __mmask16 lanes(int n) { return (__mmask16)((1u << n) - 1u); }  // n in [0, 16]
inline V load_n(const float* p, int n) { return {_mm512_maskz_loadu_ps(lanes(n), p)}; }
inline V load_n_or(const float* p, int n, float fill) {  // lanes past n hold fill
  return {_mm512_mask_loadu_ps(_mm512_set1_ps(fill), lanes(n), p)};
}
inline void store_n(float* p, V x, int n) { _mm512_mask_storeu_ps(p, lanes(n), x.v); }
inline V add(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V sub(V a, V b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V mul(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V div(V a, V b) { return {_mm512_div_ps(a.v, b.v)}; }
inline V recip(V a) {  // 1 / a to ~1 ulp: a 14-bit estimate and one Newton step
  const __m512 r = _mm512_rcp14_ps(a.v);
  return {_mm512_fmadd_ps(r, _mm512_fnmadd_ps(a.v, r, _mm512_set1_ps(1.0f)), r)};
}
inline V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }  // a * b + c
inline V max(V a, V b) { return {_mm512_max_ps(a.v, b.v)}; }
inline V min(V a, V b) { return {_mm512_min_ps(a.v, b.v)}; }
inline float reduce_add(V a) { return _mm512_reduce_add_ps(a.v); }
inline float reduce_max(V a) { return _mm512_reduce_max_ps(a.v); }
inline V round_nearest(V a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT)}; }
inline V pow2i(V n) {  // 2^n for integral n in [-126, 127]
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v),
                                                       _mm512_set1_epi32(127)), 23);
  return {_mm512_castsi512_ps(e)};
}

// r[i][j] -> r[j][i] for a W x W block: unpacks and shuffles within 128-bit lanes gather
// columns of four rows, then lane shuffles join the four row groups.
inline void transpose(V (&r)[W]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i].v, r[2 * i + 1].v);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], lane L: column 4L + c of rows 4i .. 4i+3
    u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);  // lanes 0, 2
    const __m512 x1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);  // lanes 1, 3
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c].v = _mm512_shuffle_f32x4(x0, y0, 0x88);
    r[8 + c].v = _mm512_shuffle_f32x4(x0, y0, 0xDD);
    r[4 + c].v = _mm512_shuffle_f32x4(x1, y1, 0x88);
    r[12 + c].v = _mm512_shuffle_f32x4(x1, y1, 0xDD);
  }
}

#elif defined(__AVX2__)

constexpr int W = 8;
struct V { __m256 v; };
alignas(32) constexpr int32_t kLaneMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0, 0, 0, 0, 0, 0, 0, 0};
inline __m256i lanes(int n) {  // n in [0, 8]
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMask + 8 - n));
}
inline V zero() { return {_mm256_setzero_ps()}; }
inline V set1(float x) { return {_mm256_set1_ps(x)}; }
inline V load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store(float* p, V x) { _mm256_storeu_ps(p, x.v); }
inline V load_n(const float* p, int n) { return {_mm256_maskload_ps(p, lanes(n))}; }
inline V load_n_or(const float* p, int n, float fill) {
  const __m256i m = lanes(n);
  return {_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m))};
}
inline void store_n(float* p, V x, int n) { _mm256_maskstore_ps(p, lanes(n), x.v); }
inline V add(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
inline V sub(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline V mul(V a, V b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline V div(V a, V b) { return {_mm256_div_ps(a.v, b.v)}; }
inline V recip(V a) {  // 1 / a to ~2^-22: a 12-bit estimate and one Newton step
  const __m256 r = _mm256_rcp_ps(a.v);
  return {_mm256_fmadd_ps(r, _mm256_fnmadd_ps(a.v, r, _mm256_set1_ps(1.0f)), r)};
}
inline V fma(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline V max(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
inline V min(V a, V b) { return {_mm256_min_ps(a.v, b.v)}; }
inline float reduce_add(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline float reduce_max(V a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
inline V round_nearest(V a) {
  return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline V pow2i(V n) {
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v),
                                                       _mm256_set1_epi32(127)), 23);
  return {_mm256_castsi256_ps(e)};
}

inline void transpose(V (&r)[W]) {  // as the AVX-512 one, with two 128-bit lanes
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i].v, r[2 * i + 1].v);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i].v, r[2 * i + 1].v);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {
    r[c].v = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
    r[4 + c].v = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
  }
}

#else  // portable C++: fixed-size arrays the compiler maps onto whatever SIMD the target has

constexpr int W = 4;
struct V { float v[W]; };
#define PV_LANEWISE(expr) V r; for (int i = 0; i < W; ++i) r.v[i] = (expr); return r
inline V zero() { PV_LANEWISE(0.0f); }
inline V set1(float x) { PV_LANEWISE(x); }
inline V load(const float* p) { PV_LANEWISE(p[i]); }
inline void store(float* p, V x) { for (int i = 0; i < W; ++i) p[i] = x.v[i]; }
inline V load_n(const float* p, int n) { PV_LANEWISE(i < n ? p[i] : 0.0f); }
inline V load_n_or(const float* p, int n, float fill) { PV_LANEWISE(i < n ? p[i] : fill); }
inline void store_n(float* p, V x, int n) { for (int i = 0; i < n; ++i) p[i] = x.v[i]; }
inline V add(V a, V b) { PV_LANEWISE(a.v[i] + b.v[i]); }
inline V sub(V a, V b) { PV_LANEWISE(a.v[i] - b.v[i]); }
inline V mul(V a, V b) { PV_LANEWISE(a.v[i] * b.v[i]); }
inline V div(V a, V b) { PV_LANEWISE(a.v[i] / b.v[i]); }
inline V recip(V a) { PV_LANEWISE(1.0f / a.v[i]); }
inline V fma(V a, V b, V c) { PV_LANEWISE(__builtin_fmaf(a.v[i], b.v[i], c.v[i])); }
inline V max(V a, V b) { PV_LANEWISE(a.v[i] > b.v[i] ? a.v[i] : b.v[i]); }
inline V min(V a, V b) { PV_LANEWISE(a.v[i] < b.v[i] ? a.v[i] : b.v[i]); }
inline float reduce_add(V a) { return (a.v[0] + a.v[2]) + (a.v[1] + a.v[3]); }
inline float reduce_max(V a) {
  const float x = a.v[0] > a.v[1] ? a.v[0] : a.v[1], y = a.v[2] > a.v[3] ? a.v[2] : a.v[3];
  return x > y ? x : y;
}
inline V round_nearest(V a) { PV_LANEWISE(__builtin_nearbyintf(a.v[i])); }
inline V pow2i(V n) {
  V r;
  for (int i = 0; i < W; ++i) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n.v[i]) + 127) << 23;
    std::memcpy(&r.v[i], &bits, sizeof bits);
  }
  return r;
}
inline void transpose(V (&r)[W]) {
  for (int i = 0; i < W; ++i)
    for (int j = i + 1; j < W; ++j) {
      const float x = r[i].v[j];
      r[i].v[j] = r[j].v[i];
      r[j].v[i] = x;
    }
}
#undef PV_LANEWISE

#endif

// ---- small integer helpers (no <algorithm>: its templates would be shared across ISAs) ---------

inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
inline long lmin(long a, long b) { return a < b ? a : b; }

// ---- transcendental functions ------------------------------------------------------------------

// e^x to about 1 ulp: x = n ln2 + r with |r| <= ln2/2, then a degree-7 Taylor polynomial (its
// truncation error 0.35^8/8! ~ 6e-9 is below half an ulp). Inputs are clamped so 2^n stays a
// normal float: e^x underflows to ~1e-38 instead of 0, which no caller can tell apart.
inline V exp(V x) {
  x = min(max(x, set1(-87.0f)), set1(88.3f));
  const V n = round_nearest(mul(x, set1(1.44269504088896341f)));
  V r = fma(n, set1(-0.693145751953125f), x);      // ln2 split in a high part exact in float
  r = fma(n, set1(-1.428606765330187e-06f), r);    // and the low remainder
  V p = set1(1.0f / 5040.0f);
  p = fma(p, r, set1(1.0f / 720.0f));
  p = fma(p, r, set1(1.0f / 120.0f));
  p = fma(p, r, set1(1.0f / 24.0f));
  p = fma(p, r, set1(1.0f / 6.0f));
  p = fma(p, r, set1(0.5f));
  p = fma(p, r, set1(1.0f));
  p = fma(p, r, set1(1.0f));
  return mul(p, pow2i(n));
}

// erf(x) = x P(x^2) / Q(x^2) on [-3.92, 3.92] (beyond it erf rounds to +-1 in float), a
// rational fit of degrees 5 / 5 made for this file by iteratively reweighted least squares: max
// abs error 1.6e-8 in exact arithmetic, 3.5e-7 evaluated in float (Abramowitz & Stegun
// 7.1.26, the formula of torch's vectorised erf, is 5.5e-7 in float). No exp and no
// division: it keeps the fused bias-GELU epilogue cheap next to the GEMM it follows.
inline V erf(V x) {
  x = min(max(x, set1(-3.92f)), set1(3.92f));
  const V t = mul(x, x);
  V p = set1(2.0347438294265885e-06f);
  p = fma(p, t, set1(2.874807978514582e-04f));
  p = fma(p, t, set1(3.868352621793747e-03f));
  p = fma(p, t, set1(5.3060565143823624e-02f));
  p = fma(p, t, set1(1.92764550447464e-01f));
  p = fma(p, t, set1(1.128378987312317f));
  V q = set1(3.807080429396592e-05f);
  q = fma(q, t, set1(1.1881226673722267e-03f));
  q = fma(q, t, set1(1.517234742641449e-02f));
  q = fma(q, t, set1(1.1508484184741974e-01f));
  q = fma(q, t, set1(5.041648149490356e-01f));
  q = fma(q, t, set1(1.0f));
  return mul(mul(x, p), recip(q));
}

// Exact GELU: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
inline V gelu_erf(V x) {
  const V half_x = mul(x, set1(0.5f));
  return fma(half_x, erf(mul(x, set1(0.70710678118654752f))), half_x);
}

// tanh GELU: 0.5 x (1 + tanh(u)) = x / (1 + e^{-2u}), u = sqrt(2/pi) (x + 0.044715 x^3);
// the sigmoid form has no cancellation for negative x.
inline V gelu_tanh(V x) {
  const V x2 = mul(x, x);
  const V u2 = mul(mul(x, set1(-2.0f * 0.7978845608028654f)),
                   fma(x2, set1(0.044715f), set1(1.0f)));  // -2u
  return mul(x, recip(add(set1(1.0f), exp(u2))));
}

}  // namespace
