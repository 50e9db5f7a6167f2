// attention_bf16.cpp — the fused attention of attention.cpp with bf16 dot products
// (vdpbf16ps) for q k^T and p v, fp32 scores, softmax and accumulation; the output rows are
// bf16, ready as the operand of the bf16 output projection.
//
// vdpbf16ps sums products over pairs, so both products need their pairs interleaved along the
// summed axis: keys are transposed to (hd/2, tp, 2) (pairs of d per token) and values re-laid
// to (tp/2, hd, 2) (pairs of tokens per d), once per (batch, head). AVX512_BF16 only.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx512_bf16 {
namespace {

constexpr int BQ = 4, KV = 4;  // 4 query rows x 4 vectors (64 keys or 64 of hd) in registers

inline int even(int n) { return (n + 1) / 2 * 2; }

// [a0, b0, a1, b1, ... a15, b15] in bf16: a and b interleaved lane by lane
inline __m512i interleave_bf16(__m512 a, __m512 b) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                       24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                       16, 0);
  return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

inline __m512bh pair(const uint16_t* p) {  // two bf16 at p, broadcast to every 32-bit lane
  int32_t v;
  __builtin_memcpy(&v, p, sizeof v);
  return (__m512bh)_mm512_set1_epi32(v);
}

// S[r][j0 : j0 + NK*W] = scale * q_r . k_j for the NQ rows; q16 (NQ, hdp), kt16 (hdp/2, tp, 2)
template <int NQ, int NK>
void scores(const uint16_t* q16, int hdp, const uint16_t* kt16, int tp, int j0, float scale,
            float* s) {
  V acc[NQ][NK];
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) acc[r][c] = zero();
  for (int p = 0; p < hdp / 2; ++p) {
    const uint16_t* row = kt16 + (static_cast<long>(p) * tp + j0) * 2;
    __m512bh k[NK];
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) k[c] = (__m512bh)_mm512_loadu_si512(row + c * 2 * W);
#pragma GCC unroll 8
    for (int r = 0; r < NQ; ++r) {
      const __m512bh qr = pair(q16 + r * hdp + 2 * p);
#pragma GCC unroll 8
      for (int c = 0; c < NK; ++c) acc[r][c].v = _mm512_dpbf16_ps(acc[r][c].v, qr, k[c]);
    }
  }
  const V sc = set1(scale);
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) store(s + r * tp + j0 + c * W, mul(acc[r][c], sc));
}

// out_r[d0 : d0 + ND*W] = inv_r * sum_j p[r][j] v_j[d0 : ...] in bf16; p16 (NQ, tp),
// v16 (tp/2, hdp, 2); the last vector may be partial (`last` lanes)
template <int NQ, int ND>
void weighted_sum(const uint16_t* p16, int tp, const uint16_t* v16, int hdp, int pairs, int d0,
                  int last, const float* inv, uint16_t* const* out) {
  V acc[NQ][ND];
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) acc[r][c] = zero();
  for (int q = 0; q < pairs; ++q) {
    const uint16_t* row = v16 + (static_cast<long>(q) * hdp + d0) * 2;
    __m512bh v[ND];
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) v[c] = (__m512bh)_mm512_loadu_si512(row + c * 2 * W);
#pragma GCC unroll 8
    for (int r = 0; r < NQ; ++r) {
      const __m512bh pr = pair(p16 + r * tp + 2 * q);
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) acc[r][c].v = _mm512_dpbf16_ps(acc[r][c].v, pr, v[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r) {
    const V s = set1(inv[r]);
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) {
      const int n = c + 1 < ND ? W : last;
      _mm256_mask_storeu_epi16(out[r] + d0 + c * W, lanes(n),
                               (__m256i)_mm512_cvtneps_pbh(mul(acc[r][c], s).v));
    }
  }
}

// softmax numerators of row s[0 : tokens) as bf16 into p16[0 : tp) (zero past tokens);
// returns 1 / their sum (of the fp32 values)
inline float softmax_row(const float* s, int tokens, int tp, uint16_t* p16) {
  V mx = set1(-3.0e38f);
  for (int j = 0; j < tokens; j += W) mx = max(mx, load_n_or(s + j, imin(W, tokens - j), -3.0e38f));
  const V m = set1(reduce_max(mx));
  V sum = zero();
  for (int j = 0; j < tp; j += W) {
    const int n = imax(0, imin(W, tokens - j));
    const V e{_mm512_maskz_mov_ps(lanes(n), exp(sub(load(s + j), m)).v)};
    sum = add(sum, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p16 + j), (__m256i)_mm512_cvtneps_pbh(e.v));
  }
  return 1.0f / reduce_add(sum);
}

template <int NQ>
void block(const Attention& at, int b, int h, int i0, float* scratch) {
  const int hd = at.dim / at.heads, hdp = even(hd), T = at.tokens, tp = at.tp;
  const long ld = 3L * at.dim;
  const float* base = at.qkv + static_cast<long>(b) * T * ld;
  const long bh = static_cast<long>(b) * at.heads + h;
  const uint16_t* kt16 = at.kt16 + bh * hdp * tp;
  const uint16_t* v16 = at.v16 + bh * hdp * tp;
  float* s = scratch;                                         // (NQ, tp) scores
  uint16_t* p16 = reinterpret_cast<uint16_t*>(s + BQ * tp);   // (NQ, tp) probabilities
  uint16_t* q16 = p16 + BQ * tp;                              // (NQ, hdp) queries
  uint16_t* out[NQ];
  for (int r = 0; r < NQ; ++r) {
    const float* q = base + (i0 + r) * ld + h * hd;
    for (int d = 0; d < hdp; d += W) {
      const int n = imax(0, imin(W, hd - d)), m = imin(W, hdp - d);
      _mm256_mask_storeu_epi16(q16 + r * hdp + d, lanes(m),
                               (__m256i)_mm512_cvtneps_pbh(load_n(q + d, n).v));
    }
    out[r] = at.out16 + (static_cast<long>(b) * T + i0 + r) * at.ldo16 + h * hd;
  }
  const float scale = 1.0f / __builtin_sqrtf(static_cast<float>(hd));

  int j0 = 0;
  for (; j0 + KV * W <= tp; j0 += KV * W) scores<NQ, KV>(q16, hdp, kt16, tp, j0, scale, s);
  for (; j0 < tp; j0 += W) scores<NQ, 1>(q16, hdp, kt16, tp, j0, scale, s);

  float inv[NQ];
  for (int r = 0; r < NQ; ++r) inv[r] = softmax_row(s + r * tp, T, tp, p16 + r * tp);

  const int pairs = (T + 1) / 2;
  int d0 = 0;
  for (; d0 + KV * W <= hd; d0 += KV * W)
    weighted_sum<NQ, KV>(p16, tp, v16, hdp, pairs, d0, W, inv, out);
  for (; d0 < hd; d0 += W)
    weighted_sum<NQ, 1>(p16, tp, v16, hdp, pairs, d0, imin(W, hd - d0), inv, out);
}

using BlockFn = void (*)(const Attention&, int, int, int, float*);
constexpr BlockFn kBlocks[BQ + 1] = {nullptr, block<1>, block<2>, block<3>, block<4>};

}  // namespace

// ---- entry points ------------------------------------------------------------------------------

extern const int attention_bf16_block = BQ;

void attention_bf16_keys(const Attention& at, int u0, int u1) {
  const int hd = at.dim / at.heads, hdp = even(hd), T = at.tokens, tp = at.tp;
  const long ld = 3L * at.dim;
  for (int u = u0; u < u1; ++u) {
    const int b = u / at.heads, h = u % at.heads;
    const float* k = at.qkv + static_cast<long>(b) * T * ld + at.dim + h * hd;  // (T, hd), ld
    const float* v = k + at.dim;                                                  // (T, hd), ld
    uint16_t* kt16 = at.kt16 + static_cast<long>(u) * hdp * tp;  // (hdp/2, tp, 2)
    uint16_t* v16 = at.v16 + static_cast<long>(u) * hdp * tp;    // (tp/2, hdp, 2)
    // keys: W x W blocks transposed through registers, then pairs of d interleaved
    for (int t0 = 0; t0 < tp; t0 += W) {
      const int nt = imax(0, imin(W, T - t0));
      for (int d0 = 0; d0 < hdp; d0 += W) {
        const int nd = imax(0, imin(W, hd - d0));
        V r[W];
        for (int i = 0; i < W; ++i) r[i] = i < nt ? load_n(k + (t0 + i) * ld + d0, nd) : zero();
        transpose(r);
        for (int e = 0; e < imin(W, hdp - d0) / 2; ++e)
          _mm512_storeu_si512(kt16 + ((d0 / 2 + e) * static_cast<long>(tp) + t0) * 2,
                              interleave_bf16(r[2 * e].v, r[2 * e + 1].v));
      }
    }
    // values: rows 2q and 2q + 1 interleaved per d (a missing odd row is zero)
    for (int q = 0; q < tp / 2; ++q) {
      const int n0 = 2 * q < T ? hd : 0, n1 = 2 * q + 1 < T ? hd : 0;
      for (int d0 = 0; d0 < hdp; d0 += W) {
        const V a = load_n(v + 2 * q * ld + d0, imax(0, imin(W, n0 - d0)));
        const V c = load_n(v + (2 * q + 1) * ld + d0, imax(0, imin(W, n1 - d0)));
        const int m = imin(W, hdp - d0);  // pairs of this vector that exist
        _mm512_mask_storeu_epi16(v16 + (q * static_cast<long>(hdp) + d0) * 2,
                                 m == W ? ~0u : (1u << (2 * m)) - 1u, interleave_bf16(a.v, c.v));
      }
    }
  }
}

void attention_bf16_rows(const Attention& at, int u0, int u1, float* scratch) {
  const int blocks = (at.queries + BQ - 1) / BQ;
  for (int u = u0; u < u1; ++u) {
    const int bh = u / blocks, i0 = (u % blocks) * BQ;
    kBlocks[imin(BQ, at.queries - i0)](at, bh / at.heads, bh % at.heads, i0, scratch);
  }
}

}  // namespace polyvit::cpu::avx512_bf16
