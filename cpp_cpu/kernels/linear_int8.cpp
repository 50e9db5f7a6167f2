// linear_int8.cpp — the int8 tiles of linear (vpdpbusd: four u8 x s8 products summed into
// int32 lanes) with the fused fp32 epilogues.
//
// Activations are u8 per row with a zero point, a = sa (q - za); weights s8 per output column,
// w = sw q. The dot product sum_k (qa - za) qw = sum_k qa qw - za sum_k qw is exact in int32
// (K * 255 * 127 < 2^31 for K < 66000), then scaled once by sa * sw. AVX512_VNNI only; CPUs
// without it run linear_int8_avx2.cpp or linear_int8_generic.cpp, which give the same sums.
#include "epilogue.h"
#include "linear_tile.h"
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx512_vnni {
namespace {

// 6 rows x 4 vectors (64 columns): the 24 accumulators of the fp32 tile's 12 x 2, but each k
// quad loads 4 B vectors and broadcasts 6 A quads for its 24 vpdpbusd, where 12 x 2 took 2 and
// 12. With four times fp32's arithmetic per instruction the loads, not vpdpbusd, bounded the
// 12 x 2 tile: ViT-S/32 int8 at batch 32 ran 1.18x faster end to end with 6 x 4 (median of
// 10 paired runs, 9 of them faster; batch 1 1.05x), the logits bit for bit the same.
constexpr int NV = 4, MR = 6, NR = NV * W;

// As the fp32 tile (linear_f32.cpp); one k step is a quad of k.
template <int M>
void tile(const GemmInt8& g, int row, int col, int ncols, const int8_t* bp, const char* pf) {
  struct { __m512i v; } acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j].v = _mm512_setzero_si512();

  const uint8_t* a = g.a + row * g.lda;
  const long lda = g.lda;
  for (int k = 0; k < g.kp; k += 4, bp += 4 * NR, pf += 64) {
    __builtin_prefetch(pf, 0, 2);
    __m512i b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = _mm512_loadu_si512(bp + j * 4 * W);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      int32_t quad;
      __builtin_memcpy(&quad, a + i * lda + k, sizeof quad);
      const __m512i ai = _mm512_set1_epi32(quad);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j].v = _mm512_dpbusd_epi32(acc[i][j].v, ai, b[j]);
    }
  }

  // back to fp32: (acc - za * colsum) * sa * sw, one vector at a time as the epilogue needs it
  __m512i sum[NV];
  __m512 sw[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    const __mmask16 m = lanes(imax(0, imin(W, ncols - j * W)));
    sum[j] = _mm512_maskz_loadu_epi32(m, g.b_sum + col + j * W);
    sw[j] = _mm512_maskz_loadu_ps(m, g.b_scale + col + j * W);
  }
  auto value = [&](int i, int j) {
    const __m512i dot = _mm512_sub_epi32(
        acc[i][j].v, _mm512_mullo_epi32(_mm512_set1_epi32(g.a_zero[row + i]), sum[j]));
    return V{_mm512_mul_ps(_mm512_cvtepi32_ps(dot),
                           _mm512_mul_ps(sw[j], _mm512_set1_ps(g.a_scale[row + i])))};
  };

  float* c = g.c + row * g.ldc + col;
  finish_tile<M, NV>(value, g.epi, g.bias + col, ncols, g.r ? g.r + row * g.ldr + col : nullptr, g.ldr,
              [&](int i, int j, V y, int n) {
                if (n == W) store(c + i * g.ldc + j * W, y);
                else store_n(c + i * g.ldc + j * W, y, n);
              });
}

using TileFn = void (*)(const GemmInt8&, int, int, int, const int8_t*, const char*);
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

}  // namespace

extern const int linear_int8_nr = NR;

void linear_int8(const GemmInt8& g, int m0, int m1, int p0, int p1) {
  tile_loop<MR>(g, m0, m1, p0, p1, NR, g.b, static_cast<long>(g.kp) * NR, g.kp, g.kp / 4,
                kTiles);
}

}  // namespace polyvit::cpu::avx512_vnni
