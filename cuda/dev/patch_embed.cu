// patch_embed's gather (im2col), images (B, C, H, W) -> patches (B * N, C * P * P) in (c, ph, pw)
// order; the projection after it is linear_fp32 / linear_tc (their dev programs). Variants:
//   kernel1  a scatter: one thread per pixel, reads coalesced, writes strided by patch
//   kernel2  kernels/patch_embed.cu (promoted): a gather, one thread per patch element
// Usage: patch_embed [B C H P]   (default: ViT-S/32 at batch 256, 256 3 224 32)
#include "common.h"
#include "common.cuh"
#include "patch_embed.cuh"

using namespace polyvit_cuda;

// ---- CPU reference -------------------------------------------------------------------------------

static std::vector<double> reference(const std::vector<float>& img, int B, int C, int H, int P) {
  const int G = H / P, N = G * G, PD = C * P * P;
  std::vector<double> out(size_t(B) * N * PD);
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n)
      for (int c = 0; c < C; ++c)
        for (int ph = 0; ph < P; ++ph)
          for (int pw = 0; pw < P; ++pw)
            out[(size_t(b) * N + n) * PD + (c * P + ph) * P + pw] =
                img[((size_t(b) * C + c) * H + (n / G) * P + ph) * H + (n % G) * P + pw];
  return out;
}

// ---- kernel1 -------------------------------------------------------------------------------------

__global__ void kernel1(const float* img, float* out, int C, int H, int P, size_t total) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (b, c, y, x) of the image
  if (i >= total) return;
  const int x = int(i % H), y = int(i / H % H), c = int(i / (size_t(H) * H) % C);
  const size_t b = i / (size_t(H) * H * C);
  const int G = H / P, n = (y / P) * G + x / P;
  out[(b * G * G + n) * C * P * P + (c * P + y % P) * P + x % P] = img[i];
}

// ---- main ----------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int B = dev::arg_int(argc, argv, 1, 256), C = dev::arg_int(argc, argv, 2, 3);
    const int H = dev::arg_int(argc, argv, 3, 224), P = dev::arg_int(argc, argv, 4, 32);
    std::printf("patch_embed gather B=%d C=%d H=W=%d P=%d\n", B, C, H, P);
    const size_t total = size_t(B) * C * H * H;
    const auto img = dev::random_vector(total, 1);
    const auto want = reference(img, B, C, H, P);
    dev::DeviceArray<float> dimg(img), dout(total);
    auto k1 = [&] {
      kernel1<<<unsigned((total + 255) / 256), 256>>>(dimg.get(), dout.get(), C, H, P, total);
      CUDA_CHECK_LAUNCH("kernel1");
    };
    auto k2 = [&] { patch_embed_gather<float>(dimg.get(), dout.get(), B, C, H, H, P, nullptr); };
    bool ok = true;
    const auto exact = dev::constant_bound(total, 0.0);  // a copy: bit for bit
    dout.zero();
    k1();
    ok &= dev::validate("kernel1 scatter", dout.download(), want, exact);
    dout.zero();
    k2();
    ok &= dev::validate("kernel2 gather (kernels/)", dout.download(), want, exact);
    const double bytes = 2.0 * total * sizeof(float);
    for (const auto& [name, launch] : std::vector<std::pair<const char*, std::function<void()>>>{
             {"kernel1 scatter", k1}, {"kernel2 gather (kernels/)", k2}}) {
      const double ms = dev::time_ms(launch);
      std::printf("  %-34s %8.4f ms  %7.1f GB/s\n", name, ms, bytes / ms / 1e6);
    }
    return ok ? 0 : 1;
  });
}
