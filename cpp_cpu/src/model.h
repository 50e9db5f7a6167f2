// model.h — the ViT forward pass: weights packed at load, one parallel region per call.
#pragma once

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "buffer.h"
#include "linear.h"
#include "pack.h"

namespace polyvit::cpu {

// The ViTConfig fields the forward pass needs.
struct Dims {
  int image, patch, chans, dim, depth, heads, mlp, classes;
  float eps;
  bool qkv_bias, norm_pre, norm_post, gelu_tanh;
  int grid() const { return image / patch; }
  int patches() const { return grid() * grid(); }
  int tokens() const { return patches() + 1; }
  int head_dim() const { return dim / heads; }
  int patch_dim() const { return chans * patch * patch; }
};

// A precision or ISA this CPU cannot run: becomes polyvit.BackendError in Python.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Every tensor the config needs, name -> shape, in the shared weight format's names.
std::vector<std::pair<std::string, std::vector<long>>> expected_shapes(const Dims& d);

using WeightMap = std::unordered_map<std::string, const float*>;

class Model {
 public:
  // weights: every name of expected_shapes(d), already checked against its shape.
  Model(const Dims& d, const WeightMap& weights, Precision precision, int threads,
        const std::string& isa);
  // What the profile of a forward pass adds its seconds to, one slot per kind of op.
  enum Op { kPatchEmbed, kLayerNorm, kQkv, kAttention, kProj, kFc1, kFc2, kHead, kOps };
  static const char* op_name(int op);

  // images (B, C, H, W) -> logits (B, classes). Thread-safe; call without the GIL.
  // seconds, when set, gets each op's wall time added (kOps slots).
  void forward(const float* images, int batch, float* logits, double* seconds = nullptr);
  int threads() const { return threads_; }
  const char* isa() const { return engine_.f32->isa; }

 private:
  struct Block {
    Buffer<float> ln1_w, ln1_b, ln2_w, ln2_b;  // (D,)
    Linear qkv, proj, fc1, fc2;
    Linear q, kv;  // the last block's qkv, split: it needs q of the class tokens only
  };
  // Activations of one call, kept and reused by later calls of the same or smaller batch.
  struct Workspace {
    int batch = 0;
    Buffer<float> x;        // (B, T, D) residual stream
    Buffer<float> h;        // (B, T, D) normalised tokens, attention output, projected patches
    Buffer<float> qkv;      // (B, T, 3D)
    Buffer<float> mlp;      // (B, T, M)
    Buffer<float> kt;       // (B, H, hd, tp) transposed keys
    Buffer<uint16_t> kt16;  // (B, H, hdp/2, tp, 2) bf16 keys, see Attention
    Buffer<uint16_t> v16;   // (B, H, tp/2, hdp, 2) bf16 values
    Buffer<float> patches;  // (B, N, C*P*P)
    Buffer<float> cls;      // (B, D) normalised class tokens
    Buffer<float> scratch;  // (threads, attention scratch)
    Buffer<uint16_t> a16;   // (B*T, Kp) bf16 operand
    Buffer<uint16_t> mlp16; // (B*T, Mp) bf16 fc1 output, fc2's operand; padding zeroed once
    Buffer<uint8_t> a8;     // (B*T, Kp) u8 operand
    Buffer<float> a_scale;  // (B*T,)
    Buffer<int32_t> a_zero; // (B*T,)
  };
  std::unique_ptr<Workspace> acquire(int batch);
  long scratch_stride() const;
  void release(std::unique_ptr<Workspace> ws);

  Dims d_;
  Engine engine_;
  int threads_;
  Buffer<float> norm_pre_w_, norm_pre_b_, norm_post_w_, norm_post_b_;  // (C*P*P,), (D,)
  Buffer<float> cls_, pos_;                                             // (D,), (T, D)
  Buffer<float> norm_w_, norm_b_;                                       // (D,)
  Linear patch_, head_;
  std::vector<Block> blocks_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace polyvit::cpu
