// patch_embed.h — im2col and token assembly of the patch embedding (its GEMM is linear.h's).
#pragma once

#include "kernels.h"

namespace polyvit::cpu {

// Rows [r0, r1) of out (B * N, C * P * P): patch n of image b flattened in (c, py, px) order.
void im2col(const float* images, int channels, int image, int patch, float* out, long r0,
            long r1);

// Rows [r0, r1) of x (B, T, D): the class token for t = 0, else the projected patch
// proj[b, t - 1] (B, T - 1, D), layer-normed when norm_w is set; plus pos[t] (T, D).
void assemble_tokens(const Kernels& k, const float* proj, const float* cls, const float* pos,
                     const float* norm_w, const float* norm_b, float eps, int tokens, int dim,
                     float* x, long r0, long r1);

}  // namespace polyvit::cpu
