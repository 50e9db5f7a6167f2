// patch_embed.cpp — the two memory-moving halves of the patch embedding around its GEMM:
// im2col before it, and after it the token sequence (class token, patches, position embedding).
#include "patch_embed.h"

#include <cstring>

namespace polyvit::cpu {

void im2col(const float* images, int channels, int height, int width, int patch, float* out,
            long r0, long r1) {
  const int gw = width / patch;
  const long patches = static_cast<long>(height / patch) * gw;
  const long cols = static_cast<long>(channels) * patch * patch;
  for (long r = r0; r < r1; ++r) {
    const long b = r / patches;
    const int p = static_cast<int>(r % patches), gy = p / gw, gx = p % gw;
    float* dst = out + (r - r0) * cols;
    for (int c = 0; c < channels; ++c) {
      const float* plane = images + (b * channels + c) * static_cast<long>(height) * width;
      for (int py = 0; py < patch; ++py, dst += patch)
        std::memcpy(dst, plane + (gy * patch + py) * static_cast<long>(width) + gx * patch,
                    sizeof(float) * patch);
    }
  }
}

void assemble_tokens(const Kernels& k, const float* proj, const float* cls, const float* pos,
                     const float* norm_w, const float* norm_b, float eps, int tokens, int dim,
                     float* x, long r0, long r1) {
  for (long r = r0; r < r1; ++r) {
    const long b = r / tokens;
    const int t = static_cast<int>(r % tokens);
    float* xr = x + r * dim;
    const float* src = t == 0 ? cls : proj + (b * (tokens - 1) + t - 1) * dim;
    if (t > 0 && norm_w) k.layernorm(src, dim, xr, dim, 1, dim, norm_w, norm_b, eps);
    else std::memcpy(xr, src, sizeof(float) * dim);
    const float* pr = pos + static_cast<long>(t) * dim;
    for (int j = 0; j < dim; ++j) xr[j] += pr[j];
  }
}

}  // namespace polyvit::cpu
