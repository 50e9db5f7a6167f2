// The emulator's self-test: tiny kernels, each with one bug a GPU may or may not show, and
// launches over a GPU's limits. Built by build.py (OUT/broken_kernels) and run by
// tests/test_cuda_emulated.py, which checks that the emulator exposes every one of them.
// Each case prints one line, "<case> <what the emulator made of it>":
//   stale_static_shared / stale_dynamic_shared  elements a block read before writing that held
//       what the block before it wrote (0 once shared memory is poisoned per block)
//   missing_barrier  threads that read a neighbour's element before it was written (> 0 once
//       the threads between barriers run in a shuffled order; 0 in index order)
//   block_order      blocks that ran before the block they read from (> 0 once blocks are
//       shuffled; 0 in index order)
//   too_many_threads, over_launch_bounds, static_shared_over_48k, dynamic_shared_without_optin:
//       the error the launch reported ("<name>: <text>"), and dynamic_shared_with_optin and
//       after_failures the error of valid launches (cudaSuccess).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

constexpr int kThreads = 64;

// Reads s before writing it: on a GPU, whatever the multiprocessor held; here before this test,
// what the previous block wrote.
__global__ void reads_shared_before_writing(int* out) {
  __shared__ int s[kThreads];
  out[blockIdx.x * kThreads + threadIdx.x] = s[threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = 1000 + threadIdx.x;
}

__global__ void reads_dynamic_shared_before_writing(int* out) {
  extern __shared__ float smem[];
  out[blockIdx.x * kThreads + threadIdx.x] = static_cast<int>(smem[threadIdx.x]);
  __syncthreads();
  smem[threadIdx.x] = 1000.0f + threadIdx.x;
}

// The __syncthreads() between the write and the read is missing.
__global__ void reads_a_neighbour_without_a_barrier(int* out) {
  __shared__ int s[kThreads];
  s[threadIdx.x] = threadIdx.x;
  out[threadIdx.x] = threadIdx.x ? s[threadIdx.x - 1] : 0;
}

// Assumes blocks run in index order: each adds one to what the block before it wrote.
__global__ void reads_the_previous_blocks_output(int* out) {
  if (threadIdx.x == 0) out[blockIdx.x] = (blockIdx.x ? out[blockIdx.x - 1] : 0) + 1;
}

__global__ void __launch_bounds__(kThreads) bounded(int* out) { out[threadIdx.x] = 1; }

// nvcc (ptxas) refuses this at compile time; the emulator, which compiles anything, at launch.
// This file is built for the emulator only.
__global__ void declares_too_much_shared(int* out) {
  __shared__ float big[12 * 1024 + 1];  // 48 KiB + 4 bytes
  big[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = static_cast<int>(big[kThreads - 1 - threadIdx.x]);
}

static void report(const char* name) {
  const cudaError_t e = cudaGetLastError();
  std::printf("%s %s: %s\n", name, cudaGetErrorName(e), cudaGetErrorString(e));
}

int main() {
  constexpr int kBlocks = 16;
  int* out = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&out), kBlocks * kThreads * sizeof(int));

  auto stale = [&](const char* name, int bytes, auto kernel) {
    std::memset(out, 0, kBlocks * kThreads * sizeof(int));
    if (bytes) kernel<<<kBlocks, kThreads, bytes>>>(out);
    else kernel<<<kBlocks, kThreads>>>(out);
    int leaked = 0;
    for (int i = 0; i < kBlocks * kThreads; ++i) leaked += out[i] == 1000 + i % kThreads;
    std::printf("%s %d\n", name, leaked);
  };
  stale("stale_static_shared", 0, reads_shared_before_writing);
  stale("stale_dynamic_shared", kThreads * sizeof(float), reads_dynamic_shared_before_writing);

  reads_a_neighbour_without_a_barrier<<<1, kThreads>>>(out);
  int early = 0;
  for (int t = 1; t < kThreads; ++t) early += out[t] != t - 1;
  std::printf("missing_barrier %d\n", early);

  std::memset(out, 0, kBlocks * sizeof(int));
  reads_the_previous_blocks_output<<<kBlocks, 1>>>(out);
  int unordered = 0;
  for (int b = 0; b < kBlocks; ++b) unordered += out[b] != b + 1;
  std::printf("block_order %d\n", unordered);

  bounded<<<1, 1025>>>(out);
  report("too_many_threads");
  bounded<<<1, 2 * kThreads>>>(out);
  report("over_launch_bounds");
  declares_too_much_shared<<<1, kThreads>>>(out);
  report("static_shared_over_48k");
  reads_dynamic_shared_before_writing<<<1, kThreads, 64 * 1024>>>(out);
  report("dynamic_shared_without_optin");
  cudaFuncSetAttribute((const void*)&reads_dynamic_shared_before_writing,
                       cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
  reads_dynamic_shared_before_writing<<<1, kThreads, 64 * 1024>>>(out);
  report("dynamic_shared_with_optin");
  bounded<<<1, kThreads>>>(out);
  report("after_failures");
  cudaFree(out);
  return 0;
}
