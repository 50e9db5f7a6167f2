// linear_f32.cpp — the fp32 tiles of linear: C = epilogue(A @ B^T + bias), epilogue fused.
//
// B (the weights) is packed once at load into panels of NR columns, k-major (pack.cpp), so
// the micro-kernel reads one contiguous stream of B while broadcasting elements of A rows.
// A tile of MR x NR outputs lives in registers for the whole K loop; the epilogue (bias,
// GELU, residual) runs on the registers before the single store, so C is written once.
// Compiled once per ISA (PV_ISA names the namespace); simd.h picks the vector width.
#include "epilogue.h"
#include "linear_tile.h"
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::PV_ISA {
namespace {

// ---- tile shape per ISA: MR x NV vectors of accumulators, plus NV for B and one for A ------
#if defined(__AVX512F__)
constexpr int NV = 2, MR = 12;   // 24 + 2 + 1 of 32 zmm registers
#elif defined(__AVX2__)
constexpr int NV = 2, MR = 6;    // 12 + 2 + 1 of 16 ymm registers
#else
constexpr int NV = 2, MR = 4;
#endif
constexpr int NR = NV * W;
// ---- micro-kernel ------------------------------------------------------------------------------

// Rows [row, row + M) x columns [col, col + ncols) of C; bp is the panel holding those columns;
// each k step prefetches one line at pf into L2 (see linear_tile.h).
template <int M>
void tile(const GemmF32& g, int row, int col, int ncols, const float* bp, const char* pf) {
  V acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = zero();

  const float* a = g.a + row * g.lda;
  const long lda = g.lda;
  for (int k = 0; k < g.k; ++k, bp += NR) {
    __builtin_prefetch(pf + k * 64, 0, 2);
    V b[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) b[j] = load(bp + j * W);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const V ai = set1(a[i * lda + k]);
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] = fma(ai, b[j], acc[i][j]);
    }
  }

  float* c = g.c + row * g.ldc + col;
  finish_tile<M, NV>([&](int i, int j) { return acc[i][j]; }, g.epi, g.bias + col, ncols, g.r ? g.r + row * g.ldr + col : nullptr, g.ldr,
              [&](int i, int j, V y, int n) {
                if (n == W) store(c + i * g.ldc + j * W, y);
                else store_n(c + i * g.ldc + j * W, y, n);
              });
}

using TileFn = void (*)(const GemmF32&, int, int, int, const float*, const char*);
#if defined(__AVX512F__)
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>,
                                   tile<7>, tile<8>, tile<9>, tile<10>, tile<11>, tile<12>};
#elif defined(__AVX2__)
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};
#else
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>};
#endif

}  // namespace

// ---- entry point -------------------------------------------------------------------------------

extern const int linear_f32_nr = NR;

void linear_f32(const GemmF32& g, int m0, int m1, int p0, int p1) {
  tile_loop<MR>(g, m0, m1, p0, p1, NR, g.b, static_cast<long>(g.k) * NR, 4L * g.k, g.k, kTiles);
}

}  // namespace polyvit::cpu::PV_ISA
