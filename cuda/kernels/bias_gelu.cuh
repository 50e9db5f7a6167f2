// y (M, N) = gelu(x (M, N) + bias (N,)), standalone: the unfused baseline of the linear epilogue.
#pragma once

#include <cuda_runtime_api.h>

#include "types.h"

namespace polyvit_cuda {

// epilogue is Epilogue::kGeluErf or Epilogue::kGeluTanh; bias may be null.
void bias_gelu(const float* x, const float* bias, float* y, int M, int N, Epilogue epilogue,
               cudaStream_t stream);

}  // namespace polyvit_cuda
