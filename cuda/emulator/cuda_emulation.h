// Force-included (g++ -include) into the kernel sources when they are built for the CPU
// emulator: every CUDA thread becomes a fiber, blocks run one after another, and barriers,
// warp shuffles and shared memory behave as on the GPU (see runtime.cpp). A verification tool:
// it runs the kernels' indexing, tiling, bounds and synchronisation, not the GPU's timing,
// memory model or instruction-level numerics.
#pragma once

#define __shared__ static  // one block runs at a time, so function statics are its shared memory
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace emu {

extern dim3 thread_idx, block_idx, block_dim, grid_dim;
extern unsigned char* dynamic_smem;  // what extern __shared__ arrays become
void sync_block();
void sync_warp();
float shuffle_xor(float v, int offset);

// Runs body once per thread of every block, or records it while a stream is being captured.
void launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body);

// kernel<<<grid, block, smem, stream>>>(args) is rewritten as launcher(grid, ...)(kernel, args).
struct Launcher {
  dim3 grid, block;
  size_t smem;
  template <class F, class... A>
  void operator()(F f, A... args) {
    launch(grid, block, smem, [=]() { f(args...); });
  }
};
inline Launcher launcher(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return {grid, block, smem};
}

}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
inline float __shfl_xor_sync(unsigned, float v, int offset) { return emu::shuffle_xor(v, offset); }
inline int min(int a, int b) { return a < b ? a : b; }
