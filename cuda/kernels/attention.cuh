// out (B, T, D) = softmax(q k^T / sqrt(hd)) v per (image, head), from qkv (B, T, 3D) packed as
// q | k | v with heads contiguous inside each: one fused kernel, no (T, T) matrix in global memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "types.h"

namespace polyvit_cuda {

// Shared memory one block needs for T tokens of head dim hd; the launcher refuses more than the
// device allows per block (T * hd up to about 20,000 on A100 and 27,000 on H100).
size_t attention_smem_bytes(int T, int hd);

// Checks that T tokens of head dim hd fit and lets the kernel use that much shared memory on
// the current device; the launcher calls it too. Call it once before capturing a graph, so the
// capture records launches only.
template <class T>
void attention_prepare(int tokens, int hd);

// T (element type): float, bf16 or fp16; statistics and sums in fp32.
template <class T>
void attention(const T* qkv, T* out, int B, int tokens, int D, int heads, cudaStream_t stream);

// The class token's query alone, as the last block needs: q (B, D) the class tokens' queries,
// kv (B, T, 2D) every token's k | v -> out (B, D). The same kernel and arithmetic as attention.
template <class T>
void attention_class_query(const T* q, const T* kv, T* out, int B, int tokens, int D, int heads,
                           cudaStream_t stream);

}  // namespace polyvit_cuda
