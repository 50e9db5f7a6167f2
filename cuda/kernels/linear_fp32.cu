// fp32 GEMM on CUDA cores: a BM x BN output tile per block of 256 threads, K in steps of 16
// through shared memory, a (BM/16) x (BN/16) register micro-tile per thread, the epilogue fused.
// Every load is bounds-checked and zero-filled, so any M, N, K and any alignment work.
#include "common.cuh"
#include "epilogue.cuh"
#include "linear_fp32.cuh"

namespace polyvit_cuda {

constexpr int kFp32Threads = 256;
constexpr int kFp32TileK = 16;

// ---- kernel --------------------------------------------------------------------------------------

// Thread (ty, tx) of the 16 x 16 grid owns rows ty + 16 i and columns tx + 16 j of the tile:
// strided ownership keeps the shared-memory reads conflict-free and the stores coalesced.
template <int BM, int BN>
__global__ void __launch_bounds__(kFp32Threads)
linear_fp32_kernel(const float* a, const float* w, const float* bias, const float* residual,
                   float* out, int M, int N, int K, Epilogue epilogue, long long lda, long long ldr) {
  constexpr int BK = kFp32TileK, TM = BM / 16, TN = BN / 16;
  __shared__ float as[BK][BM + 1];  // a tile, transposed: as[k][m]
  __shared__ float ws[BK][BN + 1];  // w tile, transposed: ws[k][n]

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
  float acc[TM][TN] = {};

  for (int k0 = 0; k0 < K; k0 += BK) {
    // 16 consecutive threads read 16 consecutive floats of one row: coalesced.
    for (int e = tid; e < BM * BK; e += kFp32Threads) {
      const int r = e / BK, k = e % BK, gm = m0 + r, gk = k0 + k;
      as[k][r] = (gm < M && gk < K) ? a[gm * lda + gk] : 0.0f;
    }
    for (int e = tid; e < BN * BK; e += kFp32Threads) {
      const int r = e / BK, k = e % BK, gn = n0 + r, gk = k0 + k;
      ws[k][r] = (gn < N && gk < K) ? w[static_cast<size_t>(gn) * K + gk] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float av[TM], wv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = as[k][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; ++j) wv[j] = ws[k][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(av[i], wv[j], acc[i][j]);
    }
    __syncthreads();  // the next step overwrites the tiles
  }

#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= N) continue;
      out[static_cast<size_t>(m) * N + n] = apply_epilogue(acc[i][j], bias, residual, m * ldr + n, n, epilogue);
    }
  }
}

// ---- launcher ------------------------------------------------------------------------------------

template <int BM, int BN>
static void launch(const float* a, const float* w, const float* bias, const float* residual,
                   float* out, int M, int N, int K, Epilogue epilogue, long long lda, long long ldr,
                   cudaStream_t stream) {
  const dim3 grid(ceil_div(M, BM), ceil_div(N, BN));  // M on x: up to 2^31 - 1 tiles
  linear_fp32_kernel<BM, BN><<<grid, kFp32Threads, 0, stream>>>(a, w, bias, residual, out, M, N,
                                                                K, epilogue, lda, ldr);
  CUDA_CHECK_LAUNCH("linear_fp32_kernel");
}

void linear_fp32(const float* a, const float* w, const float* bias, const float* residual,
                 float* out, int M, int N, int K, Epilogue epilogue, cudaStream_t stream,
                 RowStrides strides) {
  require(M > 0 && N > 0 && K > 0, "linear_fp32: M, N and K must be positive");
  const long long lda = strides.a ? strides.a : K, ldr = strides.residual ? strides.residual : N;
  require(lda >= K && ldr >= N, "linear_fp32: a row stride is smaller than the row");
  require(a && w && out, "linear_fp32: null input or output");
  require(epilogue != Epilogue::kResidual || residual, "linear_fp32: the residual epilogue needs a residual");
  require(ceil_div(N, 32) <= 65535, "linear_fp32: N is too large for the grid");
  // 64 x 64 tiles reuse each load 4 x 4 times; when they would leave SMs idle (small M at
  // batch 1), 32 x 32 tiles give four times the blocks.
  const long long big_tiles = static_cast<long long>(ceil_div(M, 64)) * ceil_div(N, 64);
  if (big_tiles >= current_sm_count())
    launch<64, 64>(a, w, bias, residual, out, M, N, K, epilogue, lda, ldr, stream);
  else
    launch<32, 32>(a, w, bias, residual, out, M, N, K, epilogue, lda, ldr, stream);
}

}  // namespace polyvit_cuda
