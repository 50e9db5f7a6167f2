// model.h — the ViT forward pass: weights packed at load, one parallel region per call.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
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

// The weights as the caller hands them over: float32 data by the shared format's names. The
// model takes each tensor by name where it packs it, which checks its shape there, and
// finish() rejects any tensor never taken: no list of names is kept beside the model's code.
// Errors are std::invalid_argument (ValueError in Python) naming the tensor.
class WeightMap {
 public:
  void add(const std::string& name, const float* data, std::vector<long> shape);
  const float* take(const std::string& name, const std::vector<long>& shape);
  void finish() const;

 private:
  struct Entry {
    const float* data;
    std::vector<long> shape;
    bool taken = false;
  };
  std::map<std::string, Entry> entries_;
};

class Model {
 public:
  // Takes every tensor of `weights` (see WeightMap); keeps the workspaces of the
  // `batch_sizes_kept` most recently used batch sizes.
  Model(const Dims& d, WeightMap& weights, Precision precision, int threads,
        const std::string& isa, int batch_sizes_kept);
  // What the profile of a forward pass adds its seconds to, one slot per kind of op.
  // kMlp: norm2, fc1 and fc2 fused by rows (Model::mlp_rows), where the batch is large enough
  enum Op { kPatchEmbed, kLayerNorm, kQkv, kAttention, kProj, kFc1, kFc2, kMlp, kHead, kOps };
  static const char* op_name(int op);

  // images (B, C, H, W) -> logits (B, classes). Thread-safe; call without the GIL.
  // seconds, when set, gets each op's wall time added (kOps slots).
  // maps: when set, every block's attention probabilities (depth, B, H, T, T) too (fp32
  // attention only: not with bf16 blocks); the logits are the same either way
  void forward(const float* images, int batch, float* logits, double* seconds = nullptr,
               float* maps = nullptr);
  int threads() const { return threads_; }
  const char* isa() const { return engine_.f32->isa; }
  // The int8 kernel set ("avx512_vnni", "avx2", "generic") of an int8 model, else nullptr.
  const char* int8_isa() const { return engine_.int8 ? engine_.int8->isa : nullptr; }
  // The batch sizes whose workspaces are kept, least recently used first.
  std::vector<int> cached_batch_sizes();
  void clear_cache();

 private:
  struct Block {
    Buffer<float> ln1_w, ln1_b, ln2_w, ln2_b;  // (D,)
    Linear qkv, proj, fc1, fc2;
    Linear q, kv;  // the last block's qkv, split: it needs q of the class tokens only
  };
  // Activations of one call of one batch size, kept for later calls of that size.
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
    // per thread, the rows of one chunk (kMlpChunk rows) of the fused MLP: normalised tokens
    // (also int8's LayerNorm scratch), the fc1 and fc2 operands and fc1's output, all small
    // enough to stay in L2
    Buffer<float> chunk_h;       // (threads, chunk, D)
    Buffer<float> chunk_mlp;     // (threads, chunk, M) fp32, or bf16 fc1 output for fc2
    Buffer<uint16_t> chunk_a16;  // (threads, chunk, Kp) bf16 operand
    Buffer<uint8_t> chunk_a8;    // (threads, chunk, Kp)
    Buffer<float> chunk_scale;   // (threads, chunk)
    Buffer<int32_t> chunk_zero;  // (threads, chunk)
  };
  // Rows per chunk of the fused MLP, and the fewest rows per thread that take that path: below
  // it the panel split of linear (each thread streams part of the weights) does better.
  static constexpr int kMlpChunk = 48, kMlpMinRows = 96;
  // Whether a batch runs the fused MLP: bf16 and int8 only, whose weights are small enough to
  // stream once per chunk (fp32 ran 1-4% slower fused, 48 to 192 rows per chunk).
  bool fuses_mlp(int batch) const;
  // LayerNorm of x's rows [r0, r1) written as the operand (op, row stride kp) of a linear
  // layer with K = D: bf16 rows, or u8 rows quantised kMlpChunk rows at a time from the
  // thread's fp32 scratch h while they are in L1. bf16 and int8 models only.
  void norm_operand(const float* x, long r0, long r1, const Buffer<float>& w,
                    const Buffer<float>& b, const Operand& op, long kp, float* h) const;
  // x[r0, r1) += fc2(gelu(fc1(norm2(x)))) on the calling thread alone, kMlpChunk rows at a
  // time: the (rows, M) hidden activations never leave the thread's L2 and need no barrier.
  void mlp_rows(const Block& blk, Workspace& ws, int thread, float* x, long r0, long r1) const;
  std::unique_ptr<Workspace> acquire(int batch);
  std::unique_ptr<Workspace> make_workspace(int batch) const;
  long scratch_stride() const;
  long operand_kp() const;  // columns of every reduced-precision operand row
  void release(std::unique_ptr<Workspace> ws);

  Dims d_;
  Engine engine_;
  int threads_;
  Buffer<float> norm_pre_w_, norm_pre_b_, norm_post_w_, norm_post_b_;  // (C*P*P,), (D,)
  Buffer<float> cls_, pos_;                                             // (D,), (T, D)
  Buffer<float> norm_w_, norm_b_;                                       // (D,)
  Linear patch_, head_;
  std::vector<Block> blocks_;
  // Per batch size, least recently used first: its idle workspaces (one per call that ran at
  // once). At most kept_ batch sizes; a call of a new size drops the least recently used.
  struct Cached {
    int batch;
    std::vector<std::unique_ptr<Workspace>> idle;
  };
  std::mutex pool_mutex_;
  std::list<Cached> pool_;
  int kept_;
};

}  // namespace polyvit::cpu
