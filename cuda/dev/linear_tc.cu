// Tensor-core GEMM, out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias), bf16/fp16 in, fp32
// accumulate, variants:
//   kernel1  one thread per output on CUDA cores (the rounding reference on the device)
//   kernel2  WMMA, one warp per 16 x 16 output, fragments straight from global memory
//            (M, N, K multiples of 16 only)
//   kernel3  kernels/linear_tc.cu (promoted): 128 x 128 / 64 x 64 tiles, cp.async double buffer
// Usage: linear_tc [M K N [epilogue 0 none | 1 gelu_erf | 2 gelu_tanh | 3 residual]]
// (default: ViT-S/32 fc1 at batch 256, 12800 384 1536 1)
#include <mma.h>

#include "common.cuh"
#include "epilogue.cuh"
#include "linear_reference.h"
#include "linear_tc.cuh"

using namespace polyvit_cuda;
namespace wmma = nvcuda::wmma;

// ---- kernels -------------------------------------------------------------------------------------

template <class T>
__global__ void kernel1(const T* a, const T* w, const float* bias, const float* residual, float* out, int M,
                        int N, int K, Epilogue epilogue) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
  if (n >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc = fmaf(to_float(a[size_t(m) * K + k]), to_float(w[size_t(n) * K + k]), acc);
  const size_t i = size_t(m) * N + n;
  out[i] = apply_epilogue(acc, bias, residual, i, n, epilogue);
}

// One warp per 16 x 16 tile of out; blockDim (32, 4): four warps along N.
template <class T>
__global__ void kernel2(const T* a, const T* w, const float* bias, const float* residual, float* out, int M,
                        int N, int K, Epilogue epilogue) {
  const int m0 = blockIdx.y * 16, n0 = (blockIdx.x * 4 + threadIdx.y) * 16;
  if (n0 >= N) return;  // whole warps leave
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  for (int k0 = 0; k0 < K; k0 += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
    wmma::load_matrix_sync(fa, a + size_t(m0) * K + k0, K);
    wmma::load_matrix_sync(fb, w + size_t(n0) * K + k0, K);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  __shared__ float scratch[4][256];
  float* s = scratch[threadIdx.y];
  wmma::store_matrix_sync(s, acc, 16, wmma::mem_row_major);
  __syncwarp();
  for (int e = threadIdx.x; e < 256; e += 32) {
    const int m = m0 + e / 16, n = n0 + e % 16;
    const size_t i = size_t(m) * N + n;
    out[i] = apply_epilogue(s[e], bias, residual, i, n, epilogue);
  }
}

// ---- main ----------------------------------------------------------------------------------------

template <class T>
static bool run(const char* type, int M, int K, int N, Epilogue epilogue) {
  std::printf("linear_tc %s M=%d K=%d N=%d epilogue=%d\n", type, M, K, N, static_cast<int>(epilogue));
  const auto a = dev::random_vector(size_t(M) * K, 1), w = dev::random_vector(size_t(N) * K, 2, 1.0f / std::sqrt(K));
  const auto bias = dev::random_vector(N, 3, 0.1f), residual = dev::random_vector(size_t(M) * N, 4);
  const dev::LinearReference ref = dev::linear_reference<T>(a, w, bias, residual, M, N, K, epilogue);
  // T output: plus half an ulp of T (at most 2^-8 bf16, 2^-11 fp16, relative), with 2% slack.
  std::vector<double> bound_rounded(ref.want.size());
  for (size_t i = 0; i < bound_rounded.size(); ++i)
    bound_rounded[i] = ref.bound[i] + std::fabs(ref.want[i]) * (std::is_same_v<T, bf16> ? 0.004 : 0.0005);
  dev::DeviceArray<T> da(dev::convert<T>(a)), dw(dev::convert<T>(w));
  dev::DeviceArray<float> db(bias), dr(residual), dout(size_t(M) * N);
  dev::DeviceArray<T> dout_t(size_t(M) * N);
  const bool aligned = M % 16 == 0 && N % 64 == 0 && K % 16 == 0;
  std::vector<std::pair<std::string, std::function<void()>>> variants = {
      {"kernel1 naive CUDA cores", [&] {
         kernel1<T><<<dim3((N + 127) / 128, M), 128>>>(da.get(), dw.get(), db.get(), dr.get(), dout.get(), M, N, K, epilogue);
         CUDA_CHECK_LAUNCH("kernel1");
       }},
  };
  if (aligned)
    variants.push_back({"kernel2 wmma from global", [&] {
                          kernel2<T><<<dim3(N / 64, M / 16), dim3(32, 4)>>>(da.get(), dw.get(), db.get(), dr.get(),
                                                                          dout.get(), M, N, K, epilogue);
                          CUDA_CHECK_LAUNCH("kernel2");
                        }});
  variants.push_back({"kernel3 linear_tc (kernels/)", [&] {
                        linear_tc<T, float>(da.get(), dw.get(), db.get(), dr.get(), dout.get(), M, N, K, epilogue, nullptr);
                      }});
  bool ok = true;
  for (const auto& [name, launch] : variants) {
    dout.zero();
    launch();
    ok &= dev::validate(name, dout.download(), ref.want, ref.bound);
  }
  if (epilogue != Epilogue::kResidual) {  // the T-output form the forward uses for qkv and fc1
    linear_tc<T, T>(da.get(), dw.get(), db.get(), nullptr, dout_t.get(), M, N, K, epilogue, nullptr);
    ok &= dev::validate("kernel3, output rounded to T", dout_t.download(), ref.want, bound_rounded);
  }
  ok &= dev::check_tails<T>("kernel3", [](auto... args) { linear_tc<T, float>(args..., Epilogue::kResidual, nullptr); });
  const double flop = 2.0 * M * N * K;
  for (const auto& [name, launch] : variants) {
    const double ms = dev::time_ms(launch);
    std::printf("  %-34s %8.4f ms  %8.1f TFLOP/s\n", name.c_str(), ms, flop / ms / 1e9);
  }
  return ok;
}

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int M = dev::arg_int(argc, argv, 1, 12800), K = dev::arg_int(argc, argv, 2, 384);
    const int N = dev::arg_int(argc, argv, 3, 1536);
    const auto epilogue = static_cast<Epilogue>(dev::arg_int(argc, argv, 4, 1));
    const bool ok = run<bf16>("bf16", M, K, N, epilogue) & run<fp16>("fp16", M, K, N, epilogue);
    return ok ? 0 : 1;
  });
}
