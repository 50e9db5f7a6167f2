// linear_tile.h — the loop around every tile of linear: rows in L2-sized blocks, then the
// block's packed weight panels one by one, then the panel's tiles of rows. Included by the
// linear_*.cpp kernel files (anonymous namespace: each ISA keeps its own copy).
#pragma once

#include "simd.h"

namespace {

// Bytes of A per row block: a sixth of a 2 MB L2, leaving room for the panels.
constexpr long kBlockBytes = 384 * 1024;

// Rows [m0, m1) x panels [p0, p1) of nr columns each, panel p at b + p * panel elements.
// tile[r](g, row, col, ncols, panel, prefetch) computes r rows of one panel and touches one
// cache line of `prefetch` per k step (`steps` of them). The driver points the first tiles of
// a panel at the next panel, so weights streaming from memory (batch 1) arrive in L2 while
// the current panel computes; later tiles re-touch their own panel.
template <int MR, class G, class B, class Tile>
void tile_loop(const G& g, int m0, int m1, int p0, int p1, int nr, const B* b, long panel,
               long a_row_bytes, long steps, const Tile* tile) {
  const long panel_bytes = panel * static_cast<long>(sizeof(B)), ahead = 64 * steps;
  const int mc = imax(MR, static_cast<int>(kBlockBytes / a_row_bytes));
  const int blocks = (m1 - m0 + mc - 1) / mc;
  for (int blk = 0; blk < blocks; ++blk) {  // blocks of equal height
    const int mb = m0 + (m1 - m0) * blk / blocks, me = m0 + (m1 - m0) * (blk + 1) / blocks;
    // the block's rows in tiles of near-equal height (50 rows: 5 x 10, not 4 x 12 + 2)
    const int count = (me - mb + MR - 1) / MR;
    const int base = (me - mb) / count, extra = (me - mb) % count;
    for (int p = p0; p < p1; ++p) {
      const int col = p * nr;
      const B* bp = b + p * panel;
      const char* here = reinterpret_cast<const char*>(bp);
      const char* next = p + 1 < p1 ? here + panel_bytes : here;
      int row = mb;
      for (int t = 0; t < count; ++t) {
        const int rows = base + (t < extra);
        const long done = ahead * t;  // bytes of the next panel earlier tiles prefetched
        tile[rows](g, row, col, imin(nr, g.n - col), bp,
                   done + ahead <= panel_bytes ? next + done : here);
        row += rows;
      }
    }
  }
}

}  // namespace
