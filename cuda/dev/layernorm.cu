// LayerNorm over rows, y (M, C) = (x - mean) / sqrt(var + eps) * w + b, variants:
//   kernel1  one thread per row, two passes over the row in global memory
//   kernel2  kernels/layernorm.cu (promoted): one warp per row, warp-shuffle reductions
//   kernel2 with bf16 output (what feeds the tensor-core linears)
// Usage: layernorm [M C]   (default: ViT-S/32 at batch 32, 1600 384)
#include "common.h"
#include "common.cuh"
#include "layernorm.cuh"

using namespace polyvit_cuda;

// ---- CPU reference -------------------------------------------------------------------------------

static std::vector<double> reference(const std::vector<float>& x, const std::vector<float>& w,
                                     const std::vector<float>& b, int M, int C, double eps) {
  std::vector<double> y(size_t(M) * C);
  for (int m = 0; m < M; ++m) {
    const float* r = &x[size_t(m) * C];
    double mean = 0.0, var = 0.0;
    for (int c = 0; c < C; ++c) mean += r[c];
    mean /= C;
    for (int c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
    var /= C;
    for (int c = 0; c < C; ++c) y[size_t(m) * C + c] = (r[c] - mean) / std::sqrt(var + eps) * w[c] + b[c];
  }
  return y;
}

// ---- kernel1 -------------------------------------------------------------------------------------

__global__ void kernel1(const float* x, const float* w, const float* b, float* y, int M, int C, float eps) {
  const int m = blockIdx.x * blockDim.x + threadIdx.x;
  if (m >= M) return;
  const float* r = x + size_t(m) * C;
  float mean = 0.0f, var = 0.0f;
  for (int c = 0; c < C; ++c) mean += r[c];
  mean /= C;
  for (int c = 0; c < C; ++c) var = fmaf(r[c] - mean, r[c] - mean, var);
  const float sigma = sqrtf(var / C + eps);
  for (int c = 0; c < C; ++c) y[size_t(m) * C + c] = (r[c] - mean) / sigma * w[c] + b[c];
}

// ---- main ----------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int M = dev::arg_int(argc, argv, 1, 1600), C = dev::arg_int(argc, argv, 2, 384);
    const float eps = 1e-6f;
    std::printf("layernorm M=%d C=%d\n", M, C);
    // An offset mean and a large scale, as in the op tests: the one-pass variance would fail.
    const auto x = dev::random_vector(size_t(M) * C, 1, 3.0f, 10.0f);
    const auto w = dev::random_vector(C, 2, 0.1f, 1.0f), b = dev::random_vector(C, 3, 0.1f);
    const auto want = reference(x, w, b, M, C, eps);
    // fp32 sums of C terms of size ~13: C * eps relative to the row's scale, then one division.
    const double bound = 4e-7 * C * 13.0 / 3.0 + 1e-5;
    dev::DeviceArray<float> dx(x), dw(w), db(b), dy(size_t(M) * C);
    dev::DeviceArray<bf16> dy16(size_t(M) * C);
    bool ok = true;
    auto k1 = [&] {
      kernel1<<<(M + 127) / 128, 128>>>(dx.get(), dw.get(), db.get(), dy.get(), M, C, eps);
      CUDA_CHECK_LAUNCH("kernel1");
    };
    auto k2 = [&] { layernorm<float, float>(dx.get(), C, dw.get(), db.get(), dy.get(), M, C, eps, nullptr); };
    auto k2_bf16 = [&] { layernorm<float, bf16>(dx.get(), C, dw.get(), db.get(), dy16.get(), M, C, eps, nullptr); };
    k1();
    ok &= dev::validate("kernel1 thread per row", dy.download(), want, dev::constant_bound(want.size(), bound));
    k2();
    ok &= dev::validate("kernel2 warp per row (kernels/)", dy.download(), want, dev::constant_bound(want.size(), bound));
    k2_bf16();
    std::vector<double> bound16(want.size());  // plus one bf16 rounding: 2^-8 relative at most
    for (size_t i = 0; i < want.size(); ++i) bound16[i] = bound + 0.004 * std::fabs(want[i]);
    ok &= dev::validate("kernel2, bf16 output", dy16.download(), want, bound16);
    const double bytes = 2.0 * M * C * sizeof(float);
    for (const auto& [name, launch] : std::vector<std::pair<const char*, std::function<void()>>>{
             {"kernel1 thread per row", k1}, {"kernel2 warp per row (kernels/)", k2}, {"kernel2, bf16 output", k2_bf16}}) {
      const double ms = dev::time_ms(launch);
      std::printf("  %-34s %8.4f ms  %7.1f GB/s\n", name, ms, bytes / ms / 1e6);
    }
    return ok ? 0 : 1;
  });
}
