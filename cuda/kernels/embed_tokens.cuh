// x (B, T, D) = [cls (D,) ; patch embeddings (B, T - 1, D)] + pos (T, D): the token sequence.
#pragma once

#include <cuda_runtime_api.h>

namespace polyvit_cuda {

void embed_tokens(const float* patch_embeddings, const float* cls, const float* pos, float* x,
                  int B, int T, int D, cudaStream_t stream);

}  // namespace polyvit_cuda
