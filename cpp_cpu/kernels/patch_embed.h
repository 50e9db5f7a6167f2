// patch_embed.h — the memory-moving halves of the patch embedding: im2col before its linear
// and the token assembly after it (the driver, patch_embed in ops.h, runs them around linear).
#pragma once

#include "kernels.h"

namespace polyvit::cpu {

// Rows [r0, r1) of the patch matrix (B * N, C * P * P) into out (r1 - r0 rows, out[0] is row
// r0): patch n of image b (B, C, H, W), row-major over the (H / P, W / P) grid, flattened in
// (c, py, px) order.
void im2col(const float* images, int channels, int height, int width, int patch, float* out,
            long r0, long r1);

// Rows [r0, r1) of x (B, T, D): the class token for t = 0, else the projected patch
// proj[b, t - 1] (B, T - 1, D), layer-normed when norm_w is set; plus pos[t] (T, D).
void assemble_tokens(const Kernels& k, const float* proj, const float* cls, const float* pos,
                     const float* norm_w, const float* norm_b, float eps, int tokens, int dim,
                     float* x, long r0, long r1);

}  // namespace polyvit::cpu
