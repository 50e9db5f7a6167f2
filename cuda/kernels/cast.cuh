// y (n,) = x (n,) converted element by element between float and bf16/fp16 (round to nearest
// even): weights to the tensor-core precision at load, op inputs and outputs in tests.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "types.h"

namespace polyvit_cuda {

// (TIn, TOut): (float, bf16), (float, fp16), (bf16, float), (fp16, float).
template <class TIn, class TOut>
void cast(const TIn* x, TOut* y, size_t n, cudaStream_t stream);

}  // namespace polyvit_cuda
