// im2col: images (B, C, H, W) -> patches (B * N, C * P * P), N = (H / P) * (W / P) patches in
// row-major grid order, each flattened in (c, ph, pw) order like the conv weight (D, C, P, P).
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// TOut: float, bf16 or fp16. H and W must be multiples of P.
template <class TOut>
void patchify(const float* images, TOut* patches, int B, int C, int H, int W, int P,
              cudaStream_t stream);

}  // namespace polyvit_cuda
