// Device helpers shared by the kernel files: element types and warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

#include "check.h"
#include "types.h"

namespace polyvit_cuda {

// ---- element types -----------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(fp16 x) { return __half2float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ fp16 from_float<fp16>(float x) { return __float2half_rn(x); }

// ---- warp reductions ---------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// ---- device properties ------------------------------------------------------------------------

// Multiprocessors of the current device, cached per device: launchers size their grids with it.
inline int current_sm_count() {
  constexpr int kCached = 64;
  static std::atomic<int> cache[kCached];
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  int count = device < kCached ? cache[device].load(std::memory_order_relaxed) : 0;
  if (count == 0) {
    CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    if (device < kCached) cache[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

}  // namespace polyvit_cuda
