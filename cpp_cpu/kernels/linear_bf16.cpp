// linear_bf16.cpp — the bf16 tiles of linear (vdpbf16ps: pairs of bf16 products summed into
// fp32 lanes) with the fused epilogues of the fp32 tiles, writing fp32 or, for a bf16
// consumer, bf16.
//
// A is bf16 (M, Kp); B is packed with pairs of k interleaved per column, so one 32-bit
// broadcast of A (two k) against one vector of B (16 columns x two k) is one instruction.
// AVX512_BF16 only: compiled into its own object with -mavx512bf16.
#include "epilogue.h"
#include "linear_tile.h"
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx512_bf16 {
namespace {

// 6 rows x 4 vectors, as the int8 tile (linear_int8.cpp says why): 4 B loads and 6 broadcasts
// per 24 vdpbf16ps instead of 2 and 12. ViT-S/32 bf16 at batch 32 ran 1.05x faster (medians
// of two sets of 10 paired runs, 16 of the 20 faster), batch 1 the same within the noise
// (0.98x), the logits bit for bit the same (each output still sums its k in order).
constexpr int NV = 4, MR = 6, NR = NV * W;

// As the fp32 tile (linear_f32.cpp); one k step is a pair of k.
template <int M>
void tile(const GemmBf16& g, int row, int col, int ncols, const uint16_t* bp, const char* pf) {
  V acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = zero();

  const uint16_t* a = g.a + row * g.lda;
  const long lda = g.lda;
  for (int k = 0; k < g.kp; k += 2, bp += 2 * NR, pf += 64) {
    __builtin_prefetch(pf, 0, 2);
    __m512bh b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = (__m512bh)_mm512_loadu_si512(bp + j * 2 * W);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      int32_t pair;
      __builtin_memcpy(&pair, a + i * lda + k, sizeof pair);
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j].v = _mm512_dpbf16_ps(acc[i][j].v, ai, b[j]);
    }
  }

  const float* r = g.r ? g.r + row * g.ldr + col : nullptr;
  if (g.c16) {
    uint16_t* c = g.c16 + row * g.ldc + col;
    finish_tile<M, NV>([&](int i, int j) { return acc[i][j]; }, g.epi, g.bias + col, ncols, r, g.ldr, [&](int i, int j, V y, int n) {
      const __m256i h = (__m256i)_mm512_cvtneps_pbh(y.v);
      _mm256_mask_storeu_epi16(c + i * g.ldc + j * W, (__mmask16)lanes(n), h);
    });
  } else {
    float* c = g.c + row * g.ldc + col;
    finish_tile<M, NV>([&](int i, int j) { return acc[i][j]; }, g.epi, g.bias + col, ncols, r, g.ldr, [&](int i, int j, V y, int n) {
      if (n == W) store(c + i * g.ldc + j * W, y);
      else store_n(c + i * g.ldc + j * W, y, n);
    });
  }
}

using TileFn = void (*)(const GemmBf16&, int, int, int, const uint16_t*, const char*);
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

}  // namespace

extern const int linear_bf16_nr = NR;

void linear_bf16(const GemmBf16& g, int m0, int m1, int p0, int p1) {
  tile_loop<MR>(g, m0, m1, p0, p1, NR, g.b, static_cast<long>(g.kp) * NR, 2L * g.kp, g.kp / 2,
                kTiles);
}

}  // namespace polyvit::cpu::avx512_bf16
