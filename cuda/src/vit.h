// The ViT forward pass on one device in one precision: weights uploaded and laid out once, and
// per batch size a plan (activation buffers + the captured CUDA graph of the whole forward).
// Free of Python: the bindings (module.cpp) translate arrays and errors.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "types.h"

namespace polyvit_cuda {

// The shapes and flags of polyvit.config.ViTConfig that the forward needs.
struct ViTShape {
  int image_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_dim, num_classes;
  float ln_eps;
  bool qkv_bias, patch_norm_pre, patch_norm_post;
  Epilogue gelu;  // kGeluErf or kGeluTanh

  int grid() const { return image_size / patch_size; }
  int patches() const { return grid() * grid(); }
  int tokens() const { return patches() + 1; }
  int patch_dim() const { return in_chans * patch_size * patch_size; }
  int head_dim() const { return embed_dim / num_heads; }
  void validate() const;  // std::invalid_argument on anything the kernels cannot run
};

// A float32 C-contiguous host tensor, borrowed for the duration of the upload.
struct HostTensor {
  const float* data;
  std::vector<long long> shape;
};
using HostWeights = std::map<std::string, HostTensor>;

// forward() and clear_cache() expect the engine's device to be current (the caller holds a
// DeviceScope); make_engine makes it current while it builds the engine, then restores the
// caller's.
class Engine {
 public:
  virtual ~Engine() = default;

  // Enqueues the forward of B images (B, C, H, W) float32 at `images` (host memory when
  // !on_device) and returns the device logits (B, classes), valid until the next call. The
  // caller synchronises stream() before reading them or releasing the input.
  virtual const float* forward(const float* images, bool on_device, int batch) = 0;

  virtual cudaStream_t stream() const = 0;
  virtual int device() const = 0;
  virtual std::vector<int> cached_batch_sizes() const = 0;  // least recently used first
  virtual void clear_cache() = 0;
};

// precision: "fp32" (CUDA-core fp32 linears), "bf16" or "fp16" (tensor cores, fp32 accumulate).
// weights: the shared format's names (polyvit.weights) -> tensors; each is looked up by name
// where it is uploaded, and a missing, misshapen or unexpected one is an error.
// use_graph: capture each batch size's forward once as a CUDA graph and replay it.
// batch_sizes_kept: how many batch sizes' plans (buffers, graph) are kept, least recently used
// dropped first (polyvit.backends._native.BATCH_SIZES_KEPT).
// The precision, the shape and every weight (name and shape) are checked before the device is
// touched: std::invalid_argument names the first problem.
std::unique_ptr<Engine> make_engine(const ViTShape& shape, const HostWeights& weights,
                                    const std::string& precision, int device, bool use_graph,
                                    int batch_sizes_kept);

}  // namespace polyvit_cuda
