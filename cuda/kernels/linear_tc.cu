// Tensor-core GEMM through WMMA (16 x 16 x 16 fragments, fp32 accumulators): a BM x BN tile per
// block, K in steps of 32 through a two-stage cp.async pipeline in shared memory, each warp a
// (BM / WARPS_M) x (BN / WARPS_N) sub-tile. The accumulators go through a per-warp 16 x 16
// scratch in shared memory to the epilogue, so no fragment's register layout is assumed.
#include <mma.h>

#include "common.cuh"
#include "epilogue.cuh"
#include "linear_tc.cuh"

namespace polyvit_cuda {

namespace wmma = nvcuda::wmma;

constexpr int kTcTileK = 32;
// A tile row of 32 elements padded to 40 (80 bytes): ldm stays a multiple of 8 elements as WMMA
// requires, every fragment starts 32-byte aligned, and 8 consecutive rows hit distinct banks.
constexpr int kTcLds = kTcTileK + 8;

// ---- cp.async (sm_80+) ---------------------------------------------------------------------------

// Copies 16 bytes, or writes 16 zero bytes when !inside (src-size 0: nothing is read).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool inside) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = inside ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// ---- tile loads ----------------------------------------------------------------------------------

// Stages rows [row0, row0 + ROWS) x columns [k0, k0 + 32) of src (rows, K; row stride ld) into
// dst (ROWS, kTcLds), zero-filling outside the matrix. vec (K and ld multiples of 8, src 16-byte
// aligned): 16-byte cp.async chunks, each wholly inside or outside; otherwise element by element.
template <class T, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int rows, int K, long long ld,
                                          int row0, int k0, bool vec) {
  constexpr int kChunks = kTcTileK / 8;  // 8 elements of 16 bits = 16 bytes
  for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
    const int r = c / kChunks, kc = (c % kChunks) * 8;
    const int gr = row0 + r, gk = k0 + kc;
    T* d = dst + r * kTcLds + kc;
    if (vec) {
      const bool inside = gr < rows && gk < K;
      cp_async_16(d, inside ? src + gr * ld + gk : src, inside);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i)
        d[i] = (gr < rows && gk + i < K) ? src[gr * ld + gk + i]
                                         : from_float<T>(0.0f);
    }
  }
}

// ---- kernel --------------------------------------------------------------------------------------

template <int BM, int BN>
__host__ __device__ constexpr int tc_smem_bytes() {  // two stages of the a and w tiles, 16-bit elements
  return 2 * (BM + BN) * kTcLds * 2;
}

template <class T, class TOut, int BM, int BN, int WARPS_M, int WARPS_N>
__global__ void __launch_bounds__(WARPS_M * WARPS_N * 32)
linear_tc_kernel(const T* a, const T* w, const float* bias, const float* residual, TOut* out,
                 int M, int N, int K, Epilogue epilogue, long long lda, long long ldr, bool vec) {
  constexpr int kThreads = WARPS_M * WARPS_N * 32;
  constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;  // the warp's sub-tile
  constexpr int FM = WTM / 16, FN = WTN / 16;            // its fragments
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tiles are whole fragments");
  static_assert(tc_smem_bytes<BM, BN>() >= kThreads / 32 * 256 * 4, "epilogue scratch fits");

  __shared__ __align__(128) unsigned char smem[tc_smem_bytes<BM, BN>()];
  T* as = reinterpret_cast<T*>(smem);   // (2, BM, kTcLds)
  T* ws = as + 2 * BM * kTcLds;         // (2, BN, kTcLds)

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  const int steps = (K + kTcTileK - 1) / kTcTileK;
  load_tile<T, BM, kThreads>(as, a, M, K, lda, m0, 0, vec);
  load_tile<T, BN, kThreads>(ws, w, N, K, K, n0, 0, vec);
  cp_async_commit();

  for (int s = 0; s < steps; ++s) {
    const int cur = s & 1;
    // Prefetch step s + 1 into the other stage; the barrier that ended step s - 1 freed it.
    if (s + 1 < steps) {
      load_tile<T, BM, kThreads>(as + (cur ^ 1) * BM * kTcLds, a, M, K, lda, m0, (s + 1) * kTcTileK, vec);
      load_tile<T, BN, kThreads>(ws + (cur ^ 1) * BN * kTcLds, w, N, K, K, n0, (s + 1) * kTcTileK, vec);
    }
    cp_async_commit();  // possibly empty: keeps "all but the newest group" meaning step s
    cp_async_wait<1>();
    __syncthreads();

    const T* at = as + cur * BM * kTcLds + wm * WTM * kTcLds;  // the warp's rows of a
    const T* wt = ws + cur * BN * kTcLds + wn * WTN * kTcLds;  // the warp's rows of w
#pragma unroll
    for (int kk = 0; kk < kTcTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[FM];
      // w (N, K) row-major is w^T (K, N) column-major: B(k, n) = wt[n * ldm + k].
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(fa[i], at + i * 16 * kTcLds + kk, kTcLds);
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(fb[j], wt + j * 16 * kTcLds + kk, kTcLds);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();  // every warp is done with this stage before it is refilled
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline's shared memory becomes the epilogue scratch

  float* scratch = reinterpret_cast<float*>(smem) + warp * 256;  // (16, 16) per warp
#pragma unroll
  for (int i = 0; i < FM; ++i) {
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(scratch, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int mb = m0 + wm * WTM + i * 16, nb = n0 + wn * WTN + j * 16;
      for (int e = lane; e < 256; e += 32) {
        const int m = mb + e / 16, n = nb + e % 16;
        if (m < M && n < N)
          out[static_cast<size_t>(m) * N + n] =
              from_float<TOut>(apply_epilogue(scratch[e], bias, residual, m * ldr + n, n, epilogue));
      }
      __syncwarp();  // the scratch is rewritten by the next fragment
    }
  }
}

// ---- launcher ------------------------------------------------------------------------------------

template <class T, class TOut, int BM, int BN, int WARPS_M, int WARPS_N>
static void launch(const T* a, const T* w, const float* bias, const float* residual, TOut* out,
                   int M, int N, int K, Epilogue epilogue, long long lda, long long ldr, bool vec,
                   cudaStream_t stream) {
  const dim3 grid(ceil_div(M, BM), ceil_div(N, BN));
  linear_tc_kernel<T, TOut, BM, BN, WARPS_M, WARPS_N><<<grid, WARPS_M * WARPS_N * 32, 0, stream>>>(
      a, w, bias, residual, out, M, N, K, epilogue, lda, ldr, vec);
  CUDA_CHECK_LAUNCH("linear_tc_kernel");
}

template <class T, class TOut>
void linear_tc(const T* a, const T* w, const float* bias, const float* residual, TOut* out, int M,
               int N, int K, Epilogue epilogue, cudaStream_t stream, RowStrides strides) {
  require(M > 0 && N > 0 && K > 0, "linear_tc: M, N and K must be positive");
  require(a && w && out, "linear_tc: null input or output");
  require(epilogue != Epilogue::kResidual || residual, "linear_tc: the residual epilogue needs a residual");
  require(ceil_div(N, 64) <= 65535, "linear_tc: N is too large for the grid");
  const long long lda = strides.a ? strides.a : K, ldr = strides.residual ? strides.residual : N;
  require(lda >= K && ldr >= N, "linear_tc: a row stride is smaller than the row");
  const auto aligned16 = [](const void* p) { return reinterpret_cast<size_t>(p) % 16 == 0; };
  const bool vec = K % 8 == 0 && lda % 8 == 0 && aligned16(a) && aligned16(w);
  // 128 x 128 tiles (8 warps of 64 x 32) when they fill the GPU, else 64 x 64 (4 warps of 32 x 32).
  const long long big_tiles = static_cast<long long>(ceil_div(M, 128)) * ceil_div(N, 128);
  if (big_tiles >= current_sm_count())
    launch<T, TOut, 128, 128, 2, 4>(a, w, bias, residual, out, M, N, K, epilogue, lda, ldr, vec, stream);
  else
    launch<T, TOut, 64, 64, 2, 2>(a, w, bias, residual, out, M, N, K, epilogue, lda, ldr, vec, stream);
}

template void linear_tc<bf16, bf16>(const bf16*, const bf16*, const float*, const float*, bf16*, int, int,
                                    int, Epilogue, cudaStream_t, RowStrides);
template void linear_tc<bf16, float>(const bf16*, const bf16*, const float*, const float*, float*, int, int,
                                     int, Epilogue, cudaStream_t, RowStrides);
template void linear_tc<fp16, fp16>(const fp16*, const fp16*, const float*, const float*, fp16*, int, int,
                                    int, Epilogue, cudaStream_t, RowStrides);
template void linear_tc<fp16, float>(const fp16*, const fp16*, const float*, const float*, float*, int, int,
                                     int, Epilogue, cudaStream_t, RowStrides);

}  // namespace polyvit_cuda
