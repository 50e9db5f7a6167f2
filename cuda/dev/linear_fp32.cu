// fp32 GEMM with fused epilogue, out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias), variants:
//   kernel1  one thread per output, K loop straight from global memory
//   kernel2  16 x 16 shared-memory tiles, one output per thread
//   kernel3  kernels/linear_fp32.cu (promoted): 64 x 64 / 32 x 32 tiles, register micro-tiles
// Usage: linear_fp32 [M K N [epilogue 0 none | 1 gelu_erf | 2 gelu_tanh | 3 residual]]
// (default: ViT-S/32 fc1 at batch 32, 1600 384 1536 1)
#include "common.cuh"
#include "epilogue.cuh"
#include "linear_fp32.cuh"
#include "linear_reference.h"

using namespace polyvit_cuda;

// ---- kernels -----------------------------------------------------------------------------------------

__global__ void kernel1(const float* a, const float* w, const float* bias, const float* residual, float* out,
                        int M, int N, int K, Epilogue epilogue) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc = fmaf(a[size_t(m) * K + k], w[size_t(n) * K + k], acc);
  const size_t i = size_t(m) * N + n;
  out[i] = apply_epilogue(acc, bias, residual, i, n, epilogue);
}

__global__ void kernel2(const float* a, const float* w, const float* bias, const float* residual, float* out,
                        int M, int N, int K, Epilogue epilogue) {
  __shared__ float as[16][17], ws[16][17];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int m = blockIdx.y * 16 + ty, n = blockIdx.x * 16 + tx;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += 16) {
    as[ty][tx] = (m < M && k0 + tx < K) ? a[size_t(m) * K + k0 + tx] : 0.0f;
    const int wn = blockIdx.x * 16 + ty;  // w rows staged by ty, so the read is coalesced in k
    ws[ty][tx] = (wn < N && k0 + tx < K) ? w[size_t(wn) * K + k0 + tx] : 0.0f;
    __syncthreads();
    for (int k = 0; k < 16; ++k) acc = fmaf(as[ty][k], ws[tx][k], acc);
    __syncthreads();
  }
  if (m < M && n < N) {
    const size_t i = size_t(m) * N + n;
    out[i] = apply_epilogue(acc, bias, residual, i, n, epilogue);
  }
}

// ---- main --------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int M = dev::arg_int(argc, argv, 1, 1600), K = dev::arg_int(argc, argv, 2, 384);
    const int N = dev::arg_int(argc, argv, 3, 1536);
    const auto epilogue = static_cast<Epilogue>(dev::arg_int(argc, argv, 4, 1));
    std::printf("linear_fp32 M=%d K=%d N=%d epilogue=%d\n", M, K, N, static_cast<int>(epilogue));
    const auto a = dev::random_vector(size_t(M) * K, 1), w = dev::random_vector(size_t(N) * K, 2, 1.0f / std::sqrt(K));
    const auto bias = dev::random_vector(N, 3, 0.1f), residual = dev::random_vector(size_t(M) * N, 4);
    const dev::LinearReference ref = dev::linear_reference<float>(a, w, bias, residual, M, N, K, epilogue);

    dev::DeviceArray<float> da(a), dw(w), db(bias), dr(residual), dout(size_t(M) * N);
    const std::vector<std::pair<const char*, std::function<void()>>> variants = {
        {"kernel1 naive", [&] {
           kernel1<<<dim3((N + 127) / 128, M), 128>>>(da.get(), dw.get(), db.get(), dr.get(), dout.get(), M, N, K, epilogue);
           CUDA_CHECK_LAUNCH("kernel1");
         }},
        {"kernel2 smem 16x16", [&] {
           kernel2<<<dim3((N + 15) / 16, (M + 15) / 16), dim3(16, 16)>>>(da.get(), dw.get(), db.get(), dr.get(),
                                                                        dout.get(), M, N, K, epilogue);
           CUDA_CHECK_LAUNCH("kernel2");
         }},
        {"kernel3 linear_fp32 (kernels/)", [&] {
           linear_fp32(da.get(), dw.get(), db.get(), dr.get(), dout.get(), M, N, K, epilogue, nullptr);
         }},
    };
    bool ok = true;
    for (const auto& [name, launch] : variants) {
      dout.zero();
      launch();
      ok &= dev::validate(name, dout.download(), ref.want, ref.bound);
    }
    ok &= dev::check_tails<float>("kernel3", [](auto... args) { linear_fp32(args..., Epilogue::kResidual, nullptr); });
    const double flop = 2.0 * M * N * K;
    for (const auto& [name, launch] : variants) {
      const double ms = dev::time_ms(launch);
      std::printf("  %-34s %8.4f ms  %8.1f GFLOP/s\n", name, ms, flop / ms / 1e6);
    }
    return ok ? 0 : 1;
  });
}
