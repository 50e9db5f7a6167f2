// The first half of patch_embed: images (B, C, H, W) -> patches (B * N, C * P * P), the patches
// as rows (im2col), N = (H / P) * (W / P) in row-major grid order, each flattened in (c, ph, pw)
// order like the conv weight (D, C, P, P). The second half is a linear with that weight viewed
// as (D, C * P * P); the forward runs the two apart (a LayerNorm may sit between them, and only
// the second half is in the CUDA graph).
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// TOut: float, bf16 or fp16. H and W must be multiples of P.
template <class TOut>
void patch_embed_gather(const float* images, TOut* patches, int B, int C, int H, int W, int P,
                        cudaStream_t stream);

}  // namespace polyvit_cuda
