// linear_int8_avx2.cpp — the int8 tiles of linear for CPUs without AVX512_VNNI: the int32 dot
// products of vpdpbusd (u8 activations x s8 weights, four k per lane) from AVX2 alone, with
// the fp32 epilogue of the VNNI tiles (linear_int8.cpp), so the two give the same bits.
//
// Why not vpmaddubsw: it sums two u8 x s8 products into int16 with saturation, and 255 * 127 * 2
// = 64770 does not fit, so full-range operands would clip. Here every product is formed in
// int16 x int16 -> int32 (vpmaddwd), which cannot round or saturate: one 32-bit lane of a
// packed B vector holds a column's quad of k as bytes (w0 w1 w2 w3) and a broadcast A quad
// holds (a0 a1 a2 a3), so as int16 lanes the even bytes are (w0, w2) / (a0, a2) and the odd
// bytes (w1, w3) / (a1, a3); shifts (arithmetic for s8, logical for u8) expose them in place,
// and vpmaddwd(even) + vpmaddwd(odd) is w0 a0 + w1 a1 + w2 a2 + w3 a3, each pair sum at most
// 64770 in magnitude. The accumulators wrap mod 2^32 as vpdpbusd's do, so the int32 sums are
// the VNNI tiles' sums bit for bit (exact for K < 66000, see linear_int8.cpp).
//
// Measured on Zen 4 (one thread, 48 x 384 x 1152, exact against a scalar reference): this
// 6 x 16 tile about 145 G int-op/s; B widened with vpmovsxbw instead (4 accumulators a row,
// 2 rows) about 120; vpmaddubsw on the activations split into their low 7 bits and top bit
// (neither half can saturate; two vpmaddubsw and two vpmaddwd per B vector) about 105.
#include "epilogue.h"
#include "linear_tile.h"
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::avx2 {
namespace {

// 12 accumulators + 4 unpacked B vectors + 2 of A: the compiler keeps most in the 16 ymm
// registers (a 5- or 6-row tile measured the same; 6 matches the fp32 tile)
constexpr int NV = 2, MR = 6, NR = NV * W;

// As the fp32 tile (linear_f32.cpp); one k step is a quad of k.
template <int M>
void tile(const GemmInt8& g, int row, int col, int ncols, const int8_t* bp, const char* pf) {
  __m256i acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm256_setzero_si256();

  const uint8_t* a = g.a + row * g.lda;
  const long lda = g.lda;
  const __m256i low_byte = _mm256_set1_epi16(0x00FF);
  for (int k = 0; k < g.kp; k += 4, bp += 4 * NR, pf += 64) {
    __builtin_prefetch(pf, 0, 2);
    __m256i even[NV], odd[NV];  // (w0, w2) and (w1, w3) of each column, sign-extended to int16
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + j * 4 * W));
      even[j] = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8);
      odd[j] = _mm256_srai_epi16(b, 8);
    }
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      int32_t quad;
      __builtin_memcpy(&quad, a + i * lda + k, sizeof quad);
      const __m256i ai = _mm256_set1_epi32(quad);
      const __m256i ae = _mm256_and_si256(ai, low_byte), ao = _mm256_srli_epi16(ai, 8);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j)
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_add_epi32(_mm256_madd_epi16(ae, even[j]),
                                                                 _mm256_madd_epi16(ao, odd[j])));
    }
  }

  // back to fp32 exactly as the VNNI tile: (acc - za * colsum) * (sw * sa)
  __m256i sum[NV];
  V sw[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    const int n = imax(0, imin(W, ncols - j * W));
    sum[j] = _mm256_maskload_epi32(g.b_sum + col + j * W, lanes(n));
    sw[j] = load_n(g.b_scale + col + j * W, n);
  }
  auto value = [&](int i, int j) {
    const __m256i dot = _mm256_sub_epi32(
        acc[i][j], _mm256_mullo_epi32(_mm256_set1_epi32(g.a_zero[row + i]), sum[j]));
    return V{_mm256_mul_ps(_mm256_cvtepi32_ps(dot),
                           _mm256_mul_ps(sw[j].v, _mm256_set1_ps(g.a_scale[row + i])))};
  };

  float* c = g.c + row * g.ldc + col;
  finish_tile<M, NV>(value, g.epi, g.bias + col, ncols, g.r ? g.r + row * g.ldr + col : nullptr,
                     g.ldr, [&](int i, int j, V y, int n) {
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

}  // namespace polyvit::cpu::avx2
