// Fused attention for short sequences (T up to a few hundred). A block takes one (image, head)
// and a chunk of its queries (all T, or in the last block the class token's alone): it stages
// that head's K and V in shared memory as fp32, then each warp takes one query at a time,
// computing all T scores (a key per lane), the softmax with warp reductions, and the weighted
// sum of V (a head-dim column per lane).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "attention.cuh"
#include "common.cuh"

namespace polyvit_cuda {

constexpr int kAttentionWarps = 4;

// K rows padded to an odd stride: lane j reading k[j][d] hits bank (j * stride + d) % 32, all
// distinct when the stride is odd.
__host__ __device__ constexpr int key_stride(int hd) { return hd | 1; }

size_t attention_smem_bytes(int T, int hd) {
  const size_t floats = static_cast<size_t>(T) * key_stride(hd)   // K (T, stride)
                        + static_cast<size_t>(T) * hd              // V (T, hd)
                        + static_cast<size_t>(kAttentionWarps) * hd  // q per warp
                        + static_cast<size_t>(kAttentionWarps) * T;  // probabilities per warp
  return floats * sizeof(float);
}

// ---- kernel --------------------------------------------------------------------------------------

// Where one image's rows are, in elements: token t of image b has its q at
// q + b * q_image + t * q_row, its k and v at k/v + b * kv_image + t * kv_row.
struct AttentionLayout {
  long long q_image, kv_image;
  int q_row, kv_row;
};

// Queries 0 .. Q-1 of each image against all T keys; out (B, Q, D).
template <class T>
__global__ void __launch_bounds__(kAttentionWarps * 32)
attention_kernel(const T* q_all, const T* k_all, const T* v_all, T* out, int tokens, int queries,
                 int D, int hd, AttentionLayout layout, int queries_per_block, float sqrt_hd) {
  extern __shared__ float smem[];
  const int stride = key_stride(hd);
  float* ks = smem;                          // (T, stride)
  float* vs = ks + tokens * stride;          // (T, hd)
  float* qs = vs + tokens * hd;              // (warps, hd)
  float* ps = qs + kAttentionWarps * hd;     // (warps, T)

  const int head = blockIdx.y, image = blockIdx.z;
  const T* q_base = q_all + image * layout.q_image + head * hd;    // q of token 0, this head
  const T* k_base = k_all + image * layout.kv_image + head * hd;
  const T* v_base = v_all + image * layout.kv_image + head * hd;
  for (int e = threadIdx.x; e < tokens * hd; e += blockDim.x) {
    const int t = e / hd, d = e % hd;
    ks[t * stride + d] = to_float(k_base[static_cast<size_t>(t) * layout.kv_row + d]);
    vs[t * hd + d] = to_float(v_base[static_cast<size_t>(t) * layout.kv_row + d]);
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* q = qs + warp * hd;     // (hd,)
  float* p = ps + warp * tokens;  // (T,)
  const int first = blockIdx.x * queries_per_block;
  const int last = min(queries, first + queries_per_block);
  for (int i = first + warp; i < last; i += kAttentionWarps) {
    for (int d = lane; d < hd; d += 32) q[d] = to_float(q_base[static_cast<size_t>(i) * layout.q_row + d]);
    __syncwarp();

    float top = -INFINITY;
    for (int j = lane; j < tokens; j += 32) {
      const float* k = ks + j * stride;
      float s = 0.0f;
      for (int d = 0; d < hd; ++d) s = fmaf(q[d], k[d], s);
      s /= sqrt_hd;  // divided, not scaled, as the reference does: the same rounding
      p[j] = s;
      top = fmaxf(top, s);
    }
    top = warp_max(top);
    float sum = 0.0f;
    for (int j = lane; j < tokens; j += 32) {
      const float e = expf(p[j] - top);  // each lane rewrites only its own scores
      p[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    __syncwarp();  // every lane's probabilities are written before any lane reads them all

    T* o = out + (static_cast<size_t>(image) * queries + i) * D + head * hd;  // (hd,)
    for (int d = lane; d < hd; d += 32) {
      float acc = 0.0f;
      for (int j = 0; j < tokens; ++j) acc = fmaf(p[j], vs[j * hd + d], acc);
      o[d] = from_float<T>(acc / sum);
    }
    __syncwarp();  // q and p are rewritten by the next query
  }
}

// ---- launcher ------------------------------------------------------------------------------------

template <class T>
void attention_prepare(int tokens, int hd) {
  require(tokens > 0 && hd > 0, "attention: T and the head dim must be positive");
  const size_t smem = attention_smem_bytes(tokens, hd);
  constexpr size_t kDefaultLimit = 48 * 1024;  // above it a kernel must opt in
  if (smem <= kDefaultLimit) return;
  static std::atomic<size_t> allowed[64];      // per device: the opt-in already made
  int device = 0, limit = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  if (device < 64 && allowed[device].load() >= smem) return;
  CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  require(smem <= static_cast<size_t>(limit),
          "attention: " + std::to_string(tokens) + " tokens of head dim " + std::to_string(hd) +
              " need " + std::to_string(smem) + " bytes of shared memory per block; this GPU "
              "allows " + std::to_string(limit) + " (the fused kernel is for short sequences)");
  CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  if (device < 64) {
    size_t seen = allowed[device].load();
    while (seen < smem && !allowed[device].compare_exchange_weak(seen, smem)) {}
  }
}

template <class T>
static void launch(const T* q, const T* k, const T* v, T* out, int B, int tokens, int queries,
                   int D, int heads, AttentionLayout layout, cudaStream_t stream) {
  require(B > 0 && tokens > 0 && D > 0 && heads > 0, "attention: B, T, D and heads must be positive");
  require(D % heads == 0, "attention: D must be divisible by the number of heads");
  require(q && k && v && out, "attention: null input or output");
  require(B <= 65535 && heads <= 65535, "attention: B and heads must be at most 65535");
  const int hd = D / heads;
  attention_prepare<T>(tokens, hd);
  const size_t smem = attention_smem_bytes(tokens, hd);
  // Small grids (batch 1) get chunks of 16 queries for more blocks; large ones 64, so each
  // block's K/V staging is amortised over more queries.
  const long long heads_total = static_cast<long long>(B) * heads;
  const int queries_per_block = heads_total >= 4LL * current_sm_count() ? 64 : 16;
  const dim3 grid(ceil_div(queries, queries_per_block), heads, B);
  const float sqrt_hd = static_cast<float>(std::sqrt(static_cast<double>(hd)));
  attention_kernel<T><<<grid, kAttentionWarps * 32, smem, stream>>>(
      q, k, v, out, tokens, queries, D, hd, layout, queries_per_block, sqrt_hd);
  CUDA_CHECK_LAUNCH("attention_kernel");
}

template <class T>
void attention(const T* qkv, T* out, int B, int tokens, int D, int heads, cudaStream_t stream) {
  require(qkv, "attention: null input");
  const long long row = 3LL * D;  // q | k | v
  const AttentionLayout layout{tokens * row, tokens * row, static_cast<int>(row), static_cast<int>(row)};
  launch<T>(qkv, qkv + D, qkv + 2 * static_cast<size_t>(D), out, B, tokens, tokens, D, heads, layout,
            stream);
}

template <class T>
void attention_class_query(const T* q, const T* kv, T* out, int B, int tokens, int D, int heads,
                           cudaStream_t stream) {
  require(kv, "attention_class_query: null input");
  const long long row = 2LL * D;  // k | v
  const AttentionLayout layout{D, tokens * row, D, static_cast<int>(row)};
  launch<T>(q, kv, kv + D, out, B, tokens, 1, D, heads, layout, stream);
}

template void attention_prepare<float>(int, int);
template void attention_prepare<bf16>(int, int);
template void attention_prepare<fp16>(int, int);
template void attention<float>(const float*, float*, int, int, int, int, cudaStream_t);
template void attention<bf16>(const bf16*, bf16*, int, int, int, int, cudaStream_t);
template void attention<fp16>(const fp16*, fp16*, int, int, int, int, cudaStream_t);
template void attention_class_query<float>(const float*, const float*, float*, int, int, int, int,
                                           cudaStream_t);
template void attention_class_query<bf16>(const bf16*, const bf16*, bf16*, int, int, int, int,
                                          cudaStream_t);
template void attention_class_query<fp16>(const fp16*, const fp16*, fp16*, int, int, int, int,
                                          cudaStream_t);

}  // namespace polyvit_cuda
