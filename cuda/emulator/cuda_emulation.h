// Force-included (g++ -include) into the kernel sources when they are built for the CPU
// emulator: every CUDA thread becomes a fiber, blocks run one after another in a seeded random
// order, and barriers, warp shuffles and shared memory behave as on the GPU (see runtime.cpp).
// A verification tool: it runs the kernels' indexing, tiling, bounds and synchronisation, not
// the GPU's timing, memory model or instruction-level numerics.
#pragma once

// One block runs at a time, so function statics are its shared memory. build.py follows each
// declaration with emu::static_shared(), which poisons them per block and counts their bytes.
#define __shared__ static
// build.py moves a kernel's launch bounds into emu::kernel_entry() at the top of its body.
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

// Runs body once per thread of every block, or records it while a stream is being captured. A
// configuration the GPU would refuse (more than 1024 threads, a grid too large, more dynamic
// shared memory than the kernel opted into) is not run: cudaGetLastError reports it, as after a
// failed launch on a GPU. kernel: the kernel's address, whose cudaFuncSetAttribute opt-ins count.
void launch(dim3 grid, dim3 block, size_t smem, const void* kernel, std::function<void()> body);

// The first statement of every kernel (build.py inserts it): max_threads is the first argument
// of the kernel's __launch_bounds__, 0 when it declares none. A block larger than that fails the
// launch (cudaErrorLaunchOutOfResources, as on a GPU) before any thread does anything.
void kernel_entry(long long max_threads, long long min_blocks = 0, long long max_cluster = 0);

// After each static __shared__ array's declaration (build.py inserts it): the array is poisoned
// at the start of every block, as a GPU leaves shared memory uninitialised, and its bytes count
// against the 48 KiB a kernel may declare statically.
void static_shared(void* array, size_t bytes);

// kernel<<<grid, block, smem, stream>>>(args) is rewritten as launcher(grid, ...)(kernel, args).
struct Launcher {
  dim3 grid, block;
  size_t smem;
  template <class F, class... A>
  void operator()(F f, A... args) {
    launch(grid, block, smem, reinterpret_cast<const void*>(f), [=]() { f(args...); });
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
