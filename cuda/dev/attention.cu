// Attention, out (B, T, D) = softmax(q k^T / sqrt(hd)) v per (image, head) from qkv (B, T, 3D),
// variants:
//   kernel1  three kernels through global memory: scores (B, H, T, T), row softmax, weighted sum
//   kernel2  kernels/attention.cu (promoted): one fused kernel, K and V of a head in shared memory
//   kernel2 in bf16 and fp16 (inputs and output rounded, fp32 inside)
//   kernel2 for the class token's query alone (attention_class_query: the last block)
// Usage: attention [B T D heads]   (default: ViT-S/32 at batch 32, 32 50 384 6)
#include "attention.cuh"
#include "common.h"
#include "common.cuh"

using namespace polyvit_cuda;

// ---- CPU reference -------------------------------------------------------------------------------

static std::vector<double> reference(const std::vector<float>& qkv, int B, int T, int D, int H) {
  const int hd = D / H;
  std::vector<double> out(size_t(B) * T * D), p(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < T; ++i) {
        const float* q = &qkv[(size_t(b) * T + i) * 3 * D + h * hd];
        double top = -INFINITY, sum = 0.0;
        for (int j = 0; j < T; ++j) {
          const float* k = &qkv[(size_t(b) * T + j) * 3 * D + D + h * hd];
          double s = 0.0;
          for (int d = 0; d < hd; ++d) s += double(q[d]) * k[d];
          p[j] = s / std::sqrt(double(hd));
          top = std::max(top, p[j]);
        }
        for (int j = 0; j < T; ++j) sum += (p[j] = std::exp(p[j] - top));
        for (int d = 0; d < hd; ++d) {
          double acc = 0.0;
          for (int j = 0; j < T; ++j) acc += p[j] * qkv[(size_t(b) * T + j) * 3 * D + 2 * D + h * hd + d];
          out[(size_t(b) * T + i) * D + h * hd + d] = acc / sum;
        }
      }
  return out;
}

// ---- kernel1: unfused ----------------------------------------------------------------------------

__global__ void scores_kernel(const float* qkv, float* scores, int T, int D, int H) {  // scores (B, H, T, T)
  const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y, bh = blockIdx.z;
  if (j >= T) return;
  const int b = bh / H, h = bh % H, hd = D / H;
  const float* q = qkv + (size_t(b) * T + i) * 3 * D + h * hd;
  const float* k = qkv + (size_t(b) * T + j) * 3 * D + D + h * hd;
  float s = 0.0f;
  for (int d = 0; d < hd; ++d) s = fmaf(q[d], k[d], s);
  scores[(size_t(bh) * T + i) * T + j] = s / sqrtf(float(hd));
}

__global__ void softmax_kernel(float* scores, int rows, int T) {  // one thread per row
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* row = scores + size_t(r) * T;
  float top = -INFINITY, sum = 0.0f;
  for (int j = 0; j < T; ++j) top = fmaxf(top, row[j]);
  for (int j = 0; j < T; ++j) sum += (row[j] = expf(row[j] - top));
  for (int j = 0; j < T; ++j) row[j] /= sum;
}

__global__ void weighted_sum_kernel(const float* qkv, const float* probs, float* out, int T, int D, int H) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y, b = blockIdx.z;  // c: column of D
  if (c >= D) return;
  const int hd = D / H, h = c / hd;
  const float* p = probs + ((size_t(b) * H + h) * T + i) * T;
  float acc = 0.0f;
  for (int j = 0; j < T; ++j) acc = fmaf(p[j], qkv[(size_t(b) * T + j) * 3 * D + 2 * D + c], acc);
  out[(size_t(b) * T + i) * D + c] = acc;
}

// ---- main ----------------------------------------------------------------------------------------

template <class T>
static bool run_fused(const char* name, const std::vector<float>& qkv, const std::vector<double>& want, int B,
                      int tokens, int D, int H, double bound) {
  dev::DeviceArray<T> dq(dev::convert<T>(qkv)), dout(size_t(B) * tokens * D);
  auto launch = [&] { attention<T>(dq.get(), dout.get(), B, tokens, D, H, nullptr); };
  launch();
  const bool ok = dev::validate(name, dout.download(), want, dev::constant_bound(want.size(), bound));
  std::printf("  %-34s %8.4f ms\n", name, dev::time_ms(launch));
  return ok;
}

// The last block's layout: q (B, D) of token 0 and k | v (B, T, 2D); want: token 0's rows.
static bool run_class_query(const std::vector<float>& qkv, const std::vector<double>& want, int B, int tokens,
                            int D, int H, double bound) {
  std::vector<float> q, kv;
  std::vector<double> want0;
  for (size_t b = 0; b < size_t(B); ++b) {
    const float* image = &qkv[b * tokens * 3 * D];
    q.insert(q.end(), image, image + D);
    for (size_t t = 0; t < size_t(tokens); ++t) kv.insert(kv.end(), image + t * 3 * D + D, image + (t + 1) * 3 * D);
    want0.insert(want0.end(), want.begin() + b * tokens * D, want.begin() + (b * tokens + 1) * D);
  }
  dev::DeviceArray<float> dq(q), dkv(kv), dout(size_t(B) * D);
  auto launch = [&] { attention_class_query<float>(dq.get(), dkv.get(), dout.get(), B, tokens, D, H, nullptr); };
  launch();
  const char* name = "kernel2 class query (kernels/)";
  const bool ok = dev::validate(name, dout.download(), want0, dev::constant_bound(want0.size(), bound));
  std::printf("  %-34s %8.4f ms\n", name, dev::time_ms(launch));
  return ok;
}

int main(int argc, char** argv) {
  return dev::run_main([&] {
    const int B = dev::arg_int(argc, argv, 1, 32), T = dev::arg_int(argc, argv, 2, 50);
    const int D = dev::arg_int(argc, argv, 3, 384), H = dev::arg_int(argc, argv, 4, 6);
    std::printf("attention B=%d T=%d D=%d heads=%d (%zu bytes of shared memory per block)\n", B, T, D, H,
                attention_smem_bytes(T, D / H));
    const auto qkv = dev::random_vector(size_t(B) * T * 3 * D, 1, 2.0f);  // scores of a few units
    const auto want = reference(qkv, B, T, D, H);
    double vmax = 0.0;  // outputs are convex combinations of v: bounds scale with the largest |v|
    for (float v : qkv) vmax = std::max(vmax, double(std::fabs(v)));
    bool ok = true;

    dev::DeviceArray<float> dq(qkv), scores(size_t(B) * H * T * T), dout(size_t(B) * T * D);
    auto unfused = [&] {
      scores_kernel<<<dim3((T + 127) / 128, T, B * H), 128>>>(dq.get(), scores.get(), T, D, H);
      CUDA_CHECK_LAUNCH("scores_kernel");
      softmax_kernel<<<(B * H * T + 127) / 128, 128>>>(scores.get(), B * H * T, T);
      CUDA_CHECK_LAUNCH("softmax_kernel");
      weighted_sum_kernel<<<dim3((D + 127) / 128, T, B), 128>>>(dq.get(), scores.get(), dout.get(), T, D, H);
      CUDA_CHECK_LAUNCH("weighted_sum_kernel");
    };
    unfused();
    ok &= dev::validate("kernel1 unfused (3 kernels)", dout.download(), want,
                        dev::constant_bound(want.size(), 1e-5 * vmax));
    std::printf("  %-34s %8.4f ms\n", "kernel1 unfused (3 kernels)", dev::time_ms(unfused));

    ok &= run_fused<float>("kernel2 fused fp32 (kernels/)", qkv, want, B, T, D, H, 1e-5 * vmax);
    ok &= run_class_query(qkv, want, B, T, D, H, 1e-5 * vmax);
    // 16-bit inputs: q.k errs by about 2^-8 (bf16) / 2^-11 (fp16) relative, times scores of a few
    // units through exp; the output rounding adds the same relative step.
    ok &= run_fused<bf16>("kernel2 fused bf16", qkv, want, B, T, D, H, 0.08 * vmax);
    ok &= run_fused<fp16>("kernel2 fused fp16", qkv, want, B, T, D, H, 0.01 * vmax);
    return ok ? 0 : 1;
  });
}
