// gemm_f32.cpp — fp32 GEMM with fused epilogues: C = epilogue(A @ B^T + bias).
//
// B (the weights) is packed once at load into panels of NR columns, k-major (pack.cpp), so
// the micro-kernel reads one contiguous stream of B while broadcasting elements of A rows.
// A tile of MR x NR outputs lives in registers for the whole K loop; the epilogue (bias,
// GELU, residual) runs on the registers before the single store, so C is written once.
// Compiled once per ISA (PV_ISA names the namespace); simd.h picks the vector width.
#include "epilogue.h"
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
// Bytes of A per row block (see gemm_f32 below): a sixth of a 2 MB L2, leaving room for B.
constexpr long kBlockBytes = 384 * 1024;

// ---- micro-kernel ------------------------------------------------------------------------------

// Rows [row, row + M) x columns [col, col + ncols) of C; bp is the panel holding those columns.
// Each k step also prefetches one cache line at pf + k * 16 floats into L2: the driver points
// it at the next panel, so weights streaming from memory (batch 1) overlap the compute.
template <int M>
void tile(const GemmF32& g, int row, int col, int ncols, const float* bp, const float* pf) {
  V acc[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = zero();

  const float* a = g.a + row * g.lda;
  const long lda = g.lda;
#pragma GCC unroll 2
  for (int k = 0; k < g.k; ++k, bp += NR) {
    __builtin_prefetch(pf + k * 16, 0, 2);
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
  finish_tile(acc, g.epi, g.bias + col, ncols, g.r ? g.r + row * g.ldr + col : nullptr, g.ldr,
              [&](int i, int j, V y, int n) {
                if (n == W) store(c + i * g.ldc + j * W, y);
                else store_n(c + i * g.ldc + j * W, y, n);
              });
}

using TileFn = void (*)(const GemmF32&, int, int, int, const float*, const float*);
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

extern const int gemm_f32_nr = NR;

void gemm_f32(const GemmF32& g, int m0, int m1, int p0, int p1) {
  const long panel = static_cast<long>(g.k) * NR;  // floats per packed panel
  // blocks of rows whose A (rows x K) stays in L2 while it meets every panel, equal in height
  const int mc = imax(MR, static_cast<int>(kBlockBytes / (4L * g.k)));
  const int blocks = (m1 - m0 + mc - 1) / mc;
  for (int blk = 0; blk < blocks; ++blk) {
    const int mb = m0 + (m1 - m0) * blk / blocks, me = m0 + (m1 - m0) * (blk + 1) / blocks;
    // the block's rows split into tiles of near-equal height (50 rows: 5 x 10, not 4 x 12 + 2)
    const int tiles = (me - mb + MR - 1) / MR;
    const int base = (me - mb) / tiles, extra = (me - mb) % tiles;
    for (int p = p0; p < p1; ++p) {
      const int col = p * NR, ncols = imin(NR, g.n - col);
      const float* bp = g.b + p * panel;
      // the first tiles prefetch the next panel, k lines each; the rest re-touch their own
      const float* next = p + 1 < p1 ? bp + panel : bp;
      int row = mb;
      for (int t = 0; t < tiles; ++t) {
        const int rows = base + (t < extra);
        const long ahead = 16L * g.k * t;  // floats the earlier tiles prefetched
        kTiles[rows](g, row, col, ncols, bp, ahead + 16L * g.k <= panel ? next + ahead : bp);
        row += rows;
      }
    }
  }
}

}  // namespace polyvit::cpu::PV_ISA
