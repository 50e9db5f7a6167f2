// attention.cpp — softmax(q k^T / sqrt(hd)) v for each (batch, head), fused.
//
// Work is cut into units of (batch, head, block of BQ query rows). A unit computes its BQ rows
// of scores against all keys into a small per-thread scratch (BQ x tp floats, in L1), turns
// them into probabilities in place, and multiplies by v: the (T, T) score matrix is never
// written out. Keys are first transposed per (batch, head) to (hd, tp) so the score loop
// reads contiguous vectors of keys and broadcasts q, like the GEMM micro-kernel.
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {
namespace {

#if defined(__AVX512F__)
constexpr int BQ = 4, KV = 4;   // 4 query rows x 4 vectors of keys (or of hd) in registers
#elif defined(__AVX2__)
constexpr int BQ = 3, KV = 3;
#else
constexpr int BQ = 2, KV = 2;
#endif

// S[r][j0 : j0 + NK*W] = scale * q_r . kt[:, j0 : ...] for the NQ query rows of the block
template <int NQ, int NK>
void scores(const float* const* q, const float* kt, int tp, int hd, int j0, float scale,
            float* s) {
  V acc[NQ][NK];
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) acc[r][c] = zero();
  for (int d = 0; d < hd; ++d) {
    const float* row = kt + static_cast<long>(d) * tp + j0;
    V k[NK];
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) k[c] = load(row + c * W);
#pragma GCC unroll 8
    for (int r = 0; r < NQ; ++r) {
      const V qr = set1(q[r][d]);
#pragma GCC unroll 8
      for (int c = 0; c < NK; ++c) acc[r][c] = fma(qr, k[c], acc[r][c]);
    }
  }
  const V sc = set1(scale);
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < NK; ++c) store(s + r * tp + j0 + c * W, mul(acc[r][c], sc));
}

// out_r[d0 : d0 + ND*W] = inv_r * sum_j p[r][j] v_j[d0 : ...]; the last vector may be partial
template <int NQ, int ND>
void weighted_sum(const float* p, int tp, const float* v, long ldv, int tokens, int d0,
                  int last, const float* inv, float* const* out) {
  V acc[NQ][ND];
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) acc[r][c] = zero();
  for (int j = 0; j < tokens; ++j) {
    const float* vj = v + j * ldv + d0;
    V x[ND];
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) x[c] = c + 1 < ND || last == W ? load(vj + c * W)
                                                                  : load_n(vj + c * W, last);
#pragma GCC unroll 8
    for (int r = 0; r < NQ; ++r) {
      const V pr = set1(p[r * tp + j]);
#pragma GCC unroll 8
      for (int c = 0; c < ND; ++c) acc[r][c] = fma(pr, x[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NQ; ++r) {
    const V s = set1(inv[r]);
#pragma GCC unroll 8
    for (int c = 0; c < ND; ++c) {
      if (c + 1 < ND || last == W) store(out[r] + d0 + c * W, mul(acc[r][c], s));
      else store_n(out[r] + d0 + c * W, mul(acc[r][c], s), last);
    }
  }
}

// softmax numerators of row s[0 : tokens) in place; returns 1 / their sum
inline float softmax_row(float* s, int tokens) {
  const int full = tokens / W * W, tail = tokens - full;
  V mx = set1(-3.0e38f);
  for (int j = 0; j < full; j += W) mx = max(mx, load(s + j));
  if (tail) mx = max(mx, load_n_or(s + full, tail, -3.0e38f));
  const V m = set1(reduce_max(mx));
  V sum = zero();
  for (int j = 0; j < full; j += W) {
    const V e = exp(sub(load(s + j), m));
    store(s + j, e);
    sum = add(sum, e);
  }
  if (tail) {
    const V e = exp(sub(load_n(s + full, tail), m));
    store_n(s + full, e, tail);
    sum = add(sum, load_n(s + full, tail));  // the stored lanes only
  }
  return 1.0f / reduce_add(sum);
}

template <int NQ>
void block(const Attention& at, int b, int h, int i0, float* s) {
  const int hd = at.dim / at.heads, T = at.tokens, tp = at.tp;
  const long ld = 3L * at.dim;
  const float* base = at.qkv + static_cast<long>(b) * T * ld;
  const float* kt = at.kt + (static_cast<long>(b) * at.heads + h) * hd * tp;
  const float* q[NQ];
  float* out[NQ];
  for (int r = 0; r < NQ; ++r) {
    q[r] = base + (i0 + r) * ld + h * hd;
    out[r] = at.out + (static_cast<long>(b) * T + i0 + r) * at.dim + h * hd;
  }
  const float scale = 1.0f / __builtin_sqrtf(static_cast<float>(hd));

  int j0 = 0;
  for (; j0 + KV * W <= tp; j0 += KV * W) scores<NQ, KV>(q, kt, tp, hd, j0, scale, s);
  for (; j0 < tp; j0 += W) scores<NQ, 1>(q, kt, tp, hd, j0, scale, s);

  float inv[NQ];
  for (int r = 0; r < NQ; ++r) inv[r] = softmax_row(s + r * tp, T);
  if (at.probs) {  // attention maps only: the normal forward pays one predictable branch
    for (int r = 0; r < NQ; ++r) {
      float* p = at.probs + ((static_cast<long>(b) * at.heads + h) * at.queries + i0 + r) * T;
      for (int j = 0; j < T; ++j) p[j] = s[r * tp + j] * inv[r];
    }
  }

  const float* v = base + 2 * at.dim + h * hd;
  int d0 = 0;
  for (; d0 + KV * W <= hd; d0 += KV * W) weighted_sum<NQ, KV>(s, tp, v, ld, T, d0, W, inv, out);
  for (; d0 < hd; d0 += W) weighted_sum<NQ, 1>(s, tp, v, ld, T, d0, imin(W, hd - d0), inv, out);
}

using BlockFn = void (*)(const Attention&, int, int, int, float*);
#if defined(__AVX512F__)
constexpr BlockFn kBlocks[BQ + 1] = {nullptr, block<1>, block<2>, block<3>, block<4>};
#elif defined(__AVX2__)
constexpr BlockFn kBlocks[BQ + 1] = {nullptr, block<1>, block<2>, block<3>};
#else
constexpr BlockFn kBlocks[BQ + 1] = {nullptr, block<1>, block<2>};
#endif

}  // namespace

// ---- entry points ------------------------------------------------------------------------------

extern const int attention_block = BQ;

void attention_keys(const Attention& at, int u0, int u1) {
  const int hd = at.dim / at.heads, T = at.tokens, tp = at.tp;
  const long ld = 3L * at.dim;
  for (int u = u0; u < u1; ++u) {
    const int b = u / at.heads, h = u % at.heads;
    const float* k = at.qkv + static_cast<long>(b) * T * ld + at.dim + h * hd;  // (T, hd), ld
    float* kt = at.kt + static_cast<long>(u) * hd * tp;                           // (hd, tp)
    // W x W blocks through registers; rows past T load as zeros, which pads kt to tp
    for (int t0 = 0; t0 < tp; t0 += W) {
      const int nt = imax(0, imin(W, T - t0));
      for (int d0 = 0; d0 < hd; d0 += W) {
        const int nd = imin(W, hd - d0);
        V r[W];
        for (int i = 0; i < W; ++i) r[i] = i < nt ? load_n(k + (t0 + i) * ld + d0, nd) : zero();
        transpose(r);
        for (int j = 0; j < nd; ++j) store(kt + static_cast<long>(d0 + j) * tp + t0, r[j]);
      }
    }
  }
}

void attention_rows(const Attention& at, int u0, int u1, float* scratch) {
  const int blocks = (at.queries + BQ - 1) / BQ;
  for (int u = u0; u < u1; ++u) {
    const int bh = u / blocks, i0 = (u % blocks) * BQ;
    const int b = bh / at.heads, h = bh % at.heads;
    kBlocks[imin(BQ, at.queries - i0)](at, b, h, i0, scratch);
  }
}

}  // namespace polyvit::cpu::PV_ISA
