// cls (B, D) = x (B, T, D)[:, 0]: the class tokens as dense rows, the only rows the last block
// computes on after its attention (the head reads nothing else).
#pragma once

#include <cuda_runtime_api.h>

namespace polyvit_cuda {

void class_tokens(const float* x, float* cls, int B, int T, int D, cudaStream_t stream);

}  // namespace polyvit_cuda
