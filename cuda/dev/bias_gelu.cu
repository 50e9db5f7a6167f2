// Bias + exact (erf) GELU, y (M, N) = gelu(x + bias), variants:
//   kernel1  one thread per element over the flat array (a division per element for the column)
//   kernel2  kernels/bias_gelu.cu (promoted standalone): a row per blockIdx.y, no division
// and the fusion it exists to measure: linear then bias_gelu, against the linear with the
// bias-GELU epilogue (kernels/linear_fp32.cu), which never writes the pre-activation.
// Usage: bias_gelu [M N K]   (default: ViT-S/32 fc1 at batch 32, 1600 1536 384)
#include "bias_gelu.cuh"
#include "common.h"
#include "common.cuh"
#include "epilogue.cuh"
#include "linear_fp32.cuh"

using namespace polyvit_cuda;

// ---- CPU reference -------------------------------------------------------------------------------

static std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& bias, int M, int N) {
  std::vector<double> y(size_t(M) * N);
  for (size_t i = 0; i < y.size(); ++i) {
    const double v = double(x[i]) + bias[i % N];
    y[i] = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
  }
  return y;
}

// ---- kernel1 -------------------------------------------------------------------------------------

__global__ void kernel1(const float* x, const float* bias, float* y, size_t total, int N) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < total) y[i] = gelu_erf(x[i] + bias[i % N]);
}

// ---- main ----------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int M = dev::arg_int(argc, argv, 1, 1600), N = dev::arg_int(argc, argv, 2, 1536);
    const int K = dev::arg_int(argc, argv, 3, 384);
    std::printf("bias_gelu M=%d N=%d (fusion check with K=%d)\n", M, N, K);
    const auto x = dev::random_vector(size_t(M) * N, 1, 3.0f), bias = dev::random_vector(N, 2);
    const auto want = reference(x, bias, M, N);
    std::vector<double> bound(want.size());
    for (size_t i = 0; i < bound.size(); ++i) bound[i] = 4 * 1.2e-7 * (std::fabs(want[i]) + 1.0);  // a few ulp
    const size_t total = size_t(M) * N;
    dev::DeviceArray<float> dx(x), db(bias), dy(total);
    bool ok = true;
    auto k1 = [&] {
      kernel1<<<unsigned((total + 255) / 256), 256>>>(dx.get(), db.get(), dy.get(), total, N);
      CUDA_CHECK_LAUNCH("kernel1");
    };
    auto k2 = [&] { bias_gelu(dx.get(), db.get(), dy.get(), M, N, Epilogue::kGeluErf, nullptr); };
    k1();
    ok &= dev::validate("kernel1 flat", dy.download(), want, bound);
    k2();
    ok &= dev::validate("kernel2 row per block (kernels/)", dy.download(), want, bound);
    const double bytes = 2.0 * total * sizeof(float);
    for (const auto& [name, launch] : std::vector<std::pair<const char*, std::function<void()>>>{
             {"kernel1 flat", k1}, {"kernel2 row per block (kernels/)", k2}}) {
      const double ms = dev::time_ms(launch);
      std::printf("  %-34s %8.4f ms  %7.1f GB/s\n", name, ms, bytes / ms / 1e6);
    }

    // Fused against unfused, on the fp32 linear: the same numbers, one pass over y fewer.
    const auto a = dev::random_vector(size_t(M) * K, 3), w = dev::random_vector(size_t(N) * K, 4, 1.0f / std::sqrt(K));
    dev::DeviceArray<float> da(a), dw(w), pre(total), fused(total);
    auto unfused = [&] {
      linear_fp32(da.get(), dw.get(), nullptr, nullptr, pre.get(), M, N, K, Epilogue::kNone, nullptr);
      bias_gelu(pre.get(), db.get(), dy.get(), M, N, Epilogue::kGeluErf, nullptr);
    };
    auto fused_launch = [&] {
      linear_fp32(da.get(), dw.get(), db.get(), nullptr, fused.get(), M, N, K, Epilogue::kGeluErf, nullptr);
    };
    unfused();
    fused_launch();
    const auto u = dy.download(), f = fused.download();
    ok &= dev::validate("fused epilogue == linear + kernel2", f, std::vector<double>(u.begin(), u.end()),
                        dev::constant_bound(u.size(), 0.0));
    const double t_unfused = dev::time_ms(unfused), t_fused = dev::time_ms(fused_launch);
    std::printf("  linear_fp32 + bias_gelu %8.4f ms, linear_fp32 with the epilogue %8.4f ms (%.3fx)\n",
                t_unfused, t_fused, t_unfused / t_fused);
    return ok ? 0 : 1;
  });
}
