// linear_int8_generic.cpp — the int8 tiles of linear in portable C++ (isa='generic', and any
// non-x86 build): the dot products of vpdpbusd (u8 activations x s8 weights) in plain integer
// arithmetic, with the fp32 epilogue of the SIMD tiles, so all int8 sets give the same bits.
//
// Each product fits easily in int32 and so does a quad's sum (4 x 255 x 127); the running sums
// are unsigned so that they wrap mod 2^32 as vpdpbusd's lanes do instead of overflowing
// (undefined behaviour for a signed int) — the same int32 sums as the SIMD tiles for any K,
// exact for K < 66000 (see linear_int8.cpp). The scale is applied in the same float operations
// in the same order: float(acc - za * colsum) * (sw * sa), then bias and the epilogue.
#include "epilogue.h"
#include "linear_tile.h"
#include "kernels.h"
#include "simd.h"

namespace polyvit::cpu::generic {
namespace {

// 16 columns a tile: the column loop is what the compiler vectorises (16 measured 2.3x faster
// than 8 on x86-64 baseline SSE2); 4 rows as the fp32 generic tile.
constexpr int MR = 4, NR = 16, NV = NR / W;

// As the fp32 tile (linear_f32.cpp); one k step is a quad of k. No prefetch: the tiles of
// this set are too slow for the weight stream to be what they wait on.
template <int M>
void tile(const GemmInt8& g, int row, int col, int ncols, const int8_t* bp, const char*) {
  uint32_t acc[M][NR] = {};
  const uint8_t* a = g.a + row * g.lda;
  for (int k = 0; k < g.kp; k += 4, bp += 4 * NR)
    for (int i = 0; i < M; ++i) {
      const uint8_t* ai = a + i * g.lda + k;
      for (int j = 0; j < NR; ++j) {
        int32_t quad = 0;
        for (int t = 0; t < 4; ++t) quad += static_cast<int32_t>(ai[t]) * bp[j * 4 + t];
        acc[i][j] += static_cast<uint32_t>(quad);
      }
    }

  auto value = [&](int i, int j) {
    const uint32_t za = static_cast<uint32_t>(g.a_zero[row + i]);
    const float sa = g.a_scale[row + i];
    V y = zero();
    for (int l = 0; l < W; ++l) {
      const int c = j * W + l;
      if (c >= ncols) break;
      const uint32_t colsum = static_cast<uint32_t>(g.b_sum[col + c]);
      const int32_t dot = static_cast<int32_t>(acc[i][c] - za * colsum);
      y.v[l] = static_cast<float>(dot) * (g.b_scale[col + c] * sa);
    }
    return y;
  };

  float* c = g.c + row * g.ldc + col;
  finish_tile<M, NV>(value, g.epi, g.bias + col, ncols, g.r ? g.r + row * g.ldr + col : nullptr,
                     g.ldr, [&](int i, int j, V y, int n) {
                       if (n == W) store(c + i * g.ldc + j * W, y);
                       else store_n(c + i * g.ldc + j * W, y, n);
                     });
}

using TileFn = void (*)(const GemmInt8&, int, int, int, const int8_t*, const char*);
constexpr TileFn kTiles[MR + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>};

}  // namespace

extern const int linear_int8_nr = NR;

void linear_int8(const GemmInt8& g, int m0, int m1, int p0, int p1) {
  tile_loop<MR>(g, m0, m1, p0, p1, NR, g.b, static_cast<long>(g.kp) * NR, g.kp, g.kp / 4,
                kTiles);
}

}  // namespace polyvit::cpu::generic
