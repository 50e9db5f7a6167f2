// fp32 GEMM with fused epilogue, out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias), variants:
//   kernel1  one thread per output, K loop straight from global memory
//   kernel2  16 x 16 shared-memory tiles, one output per thread
//   kernel3  kernels/matmul_fp32.cu (promoted): 64 x 64 / 32 x 32 tiles, register micro-tiles
// Usage: matmul_fp32 [M K N [epilogue 0 none | 1 gelu_erf | 2 gelu_tanh | 3 residual]]
// (default: ViT-S/32 fc1 at batch 32, 1600 384 1536 1)
#include "common.h"
#include "common.cuh"
#include "epilogue.cuh"
#include "matmul_fp32.cuh"

using namespace polyvit_cuda;

// ---- CPU reference ---------------------------------------------------------------------------------

// Also returns sum_k |a w| per output: fp32 accumulation over K errs by at most about
// K * eps * that sum (the classic gamma_K bound), the scale of the tolerance.
static void reference(const std::vector<float>& a, const std::vector<float>& w, const std::vector<float>& bias,
                      const std::vector<float>& residual, int M, int N, int K, Epilogue epilogue,
                      std::vector<double>& out, std::vector<double>& magnitude) {
  // Large problems are checked on their first rows: enough for every tile column, and seconds
  // rather than minutes of CPU time.
  const int rows = static_cast<int>(std::min<long long>(M, std::max(1LL, 2000000000LL / (1LL * N * K))));
  out.assign(size_t(rows) * N, 0.0);
  magnitude.assign(size_t(rows) * N, 0.0);
  for (int m = 0; m < rows; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0.0, mag = 0.0;
      for (int k = 0; k < K; ++k) {
        const double p = double(a[size_t(m) * K + k]) * w[size_t(n) * K + k];
        acc += p;
        mag += std::fabs(p);
      }
      double v = acc + bias[n];
      if (epilogue == Epilogue::kGeluErf) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      if (epilogue == Epilogue::kGeluTanh)
        v = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
      if (epilogue == Epilogue::kResidual) v += residual[size_t(m) * N + n];
      out[size_t(m) * N + n] = v;
      magnitude[size_t(m) * N + n] = mag + std::fabs(bias[n]) + std::fabs(v);
    }
}

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
    std::printf("matmul_fp32 M=%d K=%d N=%d epilogue=%d\n", M, K, N, static_cast<int>(epilogue));
    const auto a = dev::random_vector(size_t(M) * K, 1), w = dev::random_vector(size_t(N) * K, 2, 1.0f / std::sqrt(K));
    const auto bias = dev::random_vector(N, 3, 0.1f), residual = dev::random_vector(size_t(M) * N, 4);
    std::vector<double> want, magnitude;
    reference(a, w, bias, residual, M, N, K, epilogue, want, magnitude);
    std::vector<double> bound(want.size());
    for (size_t i = 0; i < bound.size(); ++i) bound[i] = (K + 8) * 1.2e-7 * magnitude[i] + 1e-6;

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
        {"kernel3 matmul_fp32 (kernels/)", [&] {
           matmul_fp32(da.get(), dw.get(), db.get(), dr.get(), dout.get(), M, N, K, epilogue, nullptr);
         }},
    };
    bool ok = true;
    for (const auto& [name, launch] : variants) {
      dout.zero();
      launch();
      ok &= dev::validate(name, dout.download(), want, bound);
    }
    // Tails: sizes that are multiples of no tile, for the promoted kernel.
    for (const auto& [m, k, n] : std::vector<std::tuple<int, int, int>>{{33, 100, 37}, {1, 7, 5}, {5, 1, 3}, {65, 17, 129}}) {
      const auto ta = dev::random_vector(size_t(m) * k, 5), tw = dev::random_vector(size_t(n) * k, 6);
      const auto tb = dev::random_vector(n, 7), tr = dev::random_vector(size_t(m) * n, 8);
      std::vector<double> twant, tmag;
      reference(ta, tw, tb, tr, m, n, k, Epilogue::kResidual, twant, tmag);
      std::vector<double> tbound(twant.size());
      for (size_t i = 0; i < tbound.size(); ++i) tbound[i] = (k + 8) * 1.2e-7 * tmag[i] + 1e-6;
      dev::DeviceArray<float> xa(ta), xw(tw), xb(tb), xr(tr), xo(size_t(m) * n);
      matmul_fp32(xa.get(), xw.get(), xb.get(), xr.get(), xo.get(), m, n, k, Epilogue::kResidual, nullptr);
      ok &= dev::validate("kernel3 tail " + std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n),
                          xo.download(), twant, tbound);
    }
    const double flop = 2.0 * M * N * K;
    for (const auto& [name, launch] : variants) {
      const double ms = dev::time_ms(launch);
      std::printf("  %-34s %8.4f ms  %8.1f GFLOP/s\n", name, ms, flop / ms / 1e6);
    }
    return ok ? 0 : 1;
  });
}
