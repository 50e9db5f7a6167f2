// The ViT forward pass (pre-norm blocks, class-token pooling) as a sequence of kernel launches,
// following polyvit/reference.py op for op. The residual stream x stays fp32 in every precision;
// in bf16/fp16 the matmul inputs (normed activations, qkv, attention output, MLP hidden) and
// the weights are 16-bit, and every bias, norm and softmax is computed in fp32.
#include "vit.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "attention.cuh"
#include "cast.cuh"
#include "device.h"
#include "embed_tokens.cuh"
#include "layernorm.cuh"
#include "matmul_fp32.cuh"
#include "matmul_tc.cuh"
#include "patchify.cuh"

namespace polyvit_cuda {

// ---- shapes and weights ----------------------------------------------------------------------------

void ViTShape::validate() const {
  require(image_size > 0 && patch_size > 0 && in_chans > 0 && embed_dim > 0 && depth > 0 &&
              num_heads > 0 && mlp_dim > 0 && num_classes > 0,
          "config: every size must be a positive integer");
  require(image_size % patch_size == 0, "config: image_size must be a multiple of patch_size");
  require(embed_dim % num_heads == 0, "config: embed_dim must be divisible by num_heads");
  require(ln_eps > 0.0f, "config: ln_eps must be positive");
  require(gelu == Epilogue::kGeluErf || gelu == Epilogue::kGeluTanh, "config: gelu must be erf or tanh");
  require(static_cast<long long>(in_chans) * image_size * image_size < (1LL << 31) &&
              static_cast<long long>(std::max(3 * embed_dim, mlp_dim)) * tokens() < (1LL << 31),
          "config: one image's tensors must have fewer than 2^31 elements");
}

// Every tensor a shape needs, in polyvit.weights.expected_shapes order, with its shape.
static std::vector<std::pair<std::string, std::vector<long long>>> expected_weights(const ViTShape& s) {
  const long long d = s.embed_dim, m = s.mlp_dim, p = s.patch_size, c = s.in_chans;
  std::vector<std::pair<std::string, std::vector<long long>>> w;
  if (s.patch_norm_pre) {
    w.push_back({"patch_embed.norm_pre.weight", {s.patch_dim()}});
    w.push_back({"patch_embed.norm_pre.bias", {s.patch_dim()}});
  }
  w.push_back({"patch_embed.proj.weight", {d, c, p, p}});
  w.push_back({"patch_embed.proj.bias", {d}});
  if (s.patch_norm_post) {
    w.push_back({"patch_embed.norm.weight", {d}});
    w.push_back({"patch_embed.norm.bias", {d}});
  }
  w.push_back({"cls_token", {1, 1, d}});
  w.push_back({"pos_embed", {1, s.tokens(), d}});
  for (int i = 0; i < s.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    w.push_back({b + "norm1.weight", {d}});
    w.push_back({b + "norm1.bias", {d}});
    w.push_back({b + "attn.qkv.weight", {3 * d, d}});
    if (s.qkv_bias) w.push_back({b + "attn.qkv.bias", {3 * d}});
    w.push_back({b + "attn.proj.weight", {d, d}});
    w.push_back({b + "attn.proj.bias", {d}});
    w.push_back({b + "norm2.weight", {d}});
    w.push_back({b + "norm2.bias", {d}});
    w.push_back({b + "mlp.fc1.weight", {m, d}});
    w.push_back({b + "mlp.fc1.bias", {m}});
    w.push_back({b + "mlp.fc2.weight", {d, m}});
    w.push_back({b + "mlp.fc2.bias", {d}});
  }
  w.push_back({"norm.weight", {d}});
  w.push_back({"norm.bias", {d}});
  w.push_back({"head.weight", {s.num_classes, d}});
  w.push_back({"head.bias", {s.num_classes}});
  return w;
}

static std::string shape_text(const std::vector<long long>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// Throws std::invalid_argument naming the first missing, unexpected or misshapen tensor.
static void validate_weights(const ViTShape& s, const HostWeights& weights) {
  const auto expected = expected_weights(s);
  for (const auto& [name, shape] : expected) {
    const auto it = weights.find(name);
    require(it != weights.end(), "weights: missing tensor " + name);
    require(it->second.shape == shape, "weights: tensor " + name + " has shape " +
                                           shape_text(it->second.shape) + ", expected " + shape_text(shape));
    require(it->second.data != nullptr, "weights: tensor " + name + " has no data");
  }
  for (const auto& [name, tensor] : weights) {
    const bool known = std::any_of(expected.begin(), expected.end(),
                                   [&](const auto& e) { return e.first == name; });
    require(known, "weights: unexpected tensor " + name + " for this config");
  }
}

// ---- the engine --------------------------------------------------------------------------------------

// out = epilogue(a @ w^T + bias): fp32 on CUDA cores, 16-bit types on tensor cores.
template <class Act, class TOut>
static void matmul(const Act* a, const Act* w, const float* bias, const float* residual, TOut* out,
                   int M, int N, int K, Epilogue epilogue, cudaStream_t stream) {
  if constexpr (std::is_same_v<Act, float>) {
    static_assert(std::is_same_v<TOut, float>, "the fp32 path writes fp32");
    matmul_fp32(a, w, bias, residual, out, M, N, K, epilogue, stream);
  } else {
    matmul_tc<Act, TOut>(a, w, bias, residual, out, M, N, K, epilogue, stream);
  }
}

// One block's weights: matmul weights in the engine's element type Act, the rest float.
struct Block {
  DeviceBuffer norm1_w, norm1_b;  // (D,) float
  DeviceBuffer qkv_w, qkv_b;      // (3D, D) Act, (3D,) float or none
  DeviceBuffer proj_w, proj_b;    // (D, D) Act, (D,) float
  DeviceBuffer norm2_w, norm2_b;  // (D,) float
  DeviceBuffer fc1_w, fc1_b;      // (M, D) Act, (M,) float
  DeviceBuffer fc2_w, fc2_b;      // (D, M) Act, (D,) float
};

// Buffers of one batch size B; N patches, T tokens, PD patch dim. Allocated once, reused by
// every call with that B, and baked into its graph.
struct Plan {
  int batch = 0;
  unsigned long long last_used = 0;
  DeviceBuffer images;         // (B, C, H, W) float, for host input only
  DeviceBuffer patches_raw;    // (B * N, PD) float, before norm_pre (patch_norm_pre only)
  DeviceBuffer patches;        // (B * N, PD) Act
  DeviceBuffer embedded;       // (B * N, D) float
  DeviceBuffer embedded_norm;  // (B * N, D) float (patch_norm_post only)
  DeviceBuffer x;              // (B, T, D) float: the residual stream
  DeviceBuffer h;              // (B * T, D) Act: LayerNorm output
  DeviceBuffer qkv;            // (B * T, 3D) Act
  DeviceBuffer att;            // (B * T, D) Act: attention output
  DeviceBuffer hidden;         // (B * T, M) Act: GELU(fc1)
  DeviceBuffer cls;            // (B, D) Act: final norm of the class tokens
  DeviceBuffer logits;         // (B, classes) float
  std::unique_ptr<GraphExec> graph;
};

// Makes the device current before any member that allocates is constructed.
struct SelectDevice {
  explicit SelectDevice(int device) : device(device) { use_device(device); }
  int device;
};

template <class Act>
class ViTEngine final : public Engine {
 public:
  ViTEngine(const ViTShape& shape, const HostWeights& weights, int device, bool use_graph)
      : selected_(device), shape_(shape), use_graph_(use_graph) {
    attention_prepare<Act>(shape_.tokens(), shape_.head_dim());  // fails early if T is too long
    upload(weights);
  }

  const float* forward(const float* images, bool on_device, int batch) override {
    require(batch > 0 && batch <= kMaxBatch,
            "batch size must be 1 to " + std::to_string(kMaxBatch) + "; split larger batches");
    require(images != nullptr, "images: null pointer");
    Plan& plan = plan_for(batch);
    const cudaStream_t s = stream_.get();
    if (!on_device) {
      const size_t bytes = image_elements(batch) * sizeof(float);
      if (plan.images.bytes() == 0) plan.images = DeviceBuffer(bytes);
      CUDA_CHECK(cudaMemcpyAsync(plan.images.as<float>(), images, bytes, cudaMemcpyHostToDevice, s));
      images = plan.images.as<float>();
    }
    // im2col stays outside the graph: it reads the caller's buffer, whose address changes per call.
    const int C = shape_.in_chans, H = shape_.image_size, P = shape_.patch_size;
    if (shape_.patch_norm_pre)
      patchify<float>(images, plan.patches_raw.as<float>(), batch, C, H, H, P, s);
    else
      patchify<Act>(images, plan.patches.as<Act>(), batch, C, H, H, P, s);
    if (plan.graph)
      plan.graph->launch(s);
    else
      body(plan);
    return plan.logits.as<float>();
  }

  cudaStream_t stream() const override { return stream_.get(); }
  int device() const override { return selected_.device; }

  std::vector<int> cached_batch_sizes() const override {
    std::vector<int> sizes;
    for (const auto& [batch, plan] : plans_) sizes.push_back(batch);
    return sizes;
  }

  void clear_cache() override { plans_.clear(); }

 private:
  static constexpr int kMaxBatch = 65535;  // the attention grid's z dimension
  static constexpr size_t kMaxPlans = 8;   // batch sizes kept; the least recently used goes

  size_t image_elements(int batch) const {
    return static_cast<size_t>(batch) * shape_.in_chans * shape_.image_size * shape_.image_size;
  }

  // -- weights --

  void upload(const HostWeights& weights) {
    std::vector<DeviceBuffer> staging;  // fp32 copies of Act weights, alive until the casts ran
    const cudaStream_t s = stream_.get();
    auto f32 = [&](const std::string& name) {
      const HostTensor& t = weights.at(name);
      const size_t bytes = elements(t) * sizeof(float);
      DeviceBuffer buffer(bytes);
      CUDA_CHECK(cudaMemcpyAsync(buffer.as<float>(), t.data, bytes, cudaMemcpyHostToDevice, s));
      return buffer;
    };
    auto act = [&](const std::string& name) {
      if constexpr (std::is_same_v<Act, float>) {
        return f32(name);
      } else {
        staging.push_back(f32(name));
        const size_t n = staging.back().bytes() / sizeof(float);
        DeviceBuffer buffer(n * sizeof(Act));
        cast<float, Act>(staging.back().as<float>(), buffer.as<Act>(), n, s);
        return buffer;
      }
    };
    if (shape_.patch_norm_pre) {
      norm_pre_w_ = f32("patch_embed.norm_pre.weight");
      norm_pre_b_ = f32("patch_embed.norm_pre.bias");
    }
    patch_w_ = act("patch_embed.proj.weight");  // (D, C, P, P) = (D, PD): im2col's column order
    patch_b_ = f32("patch_embed.proj.bias");
    if (shape_.patch_norm_post) {
      norm_post_w_ = f32("patch_embed.norm.weight");
      norm_post_b_ = f32("patch_embed.norm.bias");
    }
    cls_token_ = f32("cls_token");
    pos_embed_ = f32("pos_embed");
    for (int i = 0; i < shape_.depth; ++i) {
      const std::string p = "blocks." + std::to_string(i) + ".";
      Block b;
      b.norm1_w = f32(p + "norm1.weight");
      b.norm1_b = f32(p + "norm1.bias");
      b.qkv_w = act(p + "attn.qkv.weight");
      if (shape_.qkv_bias) b.qkv_b = f32(p + "attn.qkv.bias");
      b.proj_w = act(p + "attn.proj.weight");
      b.proj_b = f32(p + "attn.proj.bias");
      b.norm2_w = f32(p + "norm2.weight");
      b.norm2_b = f32(p + "norm2.bias");
      b.fc1_w = act(p + "mlp.fc1.weight");
      b.fc1_b = f32(p + "mlp.fc1.bias");
      b.fc2_w = act(p + "mlp.fc2.weight");
      b.fc2_b = f32(p + "mlp.fc2.bias");
      blocks_.push_back(std::move(b));
    }
    norm_w_ = f32("norm.weight");
    norm_b_ = f32("norm.bias");
    head_w_ = act("head.weight");
    head_b_ = f32("head.bias");
    CUDA_CHECK(cudaStreamSynchronize(s));  // the host arrays and the staging may go now
  }

  static size_t elements(const HostTensor& t) {
    size_t n = 1;
    for (long long d : t.shape) n *= static_cast<size_t>(d);
    return n;
  }

  // -- plans --

  Plan& plan_for(int batch) {
    const auto found = plans_.find(batch);
    if (found != plans_.end()) {
      found->second->last_used = ++clock_;
      return *found->second;
    }
    if (plans_.size() >= kMaxPlans) {
      const auto oldest = std::min_element(plans_.begin(), plans_.end(), [](const auto& a, const auto& b) {
        return a.second->last_used < b.second->last_used;
      });
      plans_.erase(oldest);
    }
    auto plan = std::make_unique<Plan>();
    try {
      allocate(*plan, batch);
      if (use_graph_) capture(*plan);
    } catch (const CudaError& e) {
      throw CudaError(e.code, "preparing batch size " + std::to_string(batch) + ": " + e.what());
    }
    plan->last_used = ++clock_;
    return *(plans_[batch] = std::move(plan));
  }

  void allocate(Plan& p, int batch) {
    const size_t B = batch, N = shape_.patches(), T = shape_.tokens(), D = shape_.embed_dim;
    const size_t PD = shape_.patch_dim(), M = shape_.mlp_dim, a = sizeof(Act), f = sizeof(float);
    p.batch = batch;
    if (shape_.patch_norm_pre) p.patches_raw = DeviceBuffer(B * N * PD * f);
    p.patches = DeviceBuffer(B * N * PD * a);
    p.embedded = DeviceBuffer(B * N * D * f);
    if (shape_.patch_norm_post) p.embedded_norm = DeviceBuffer(B * N * D * f);
    p.x = DeviceBuffer(B * T * D * f);
    p.h = DeviceBuffer(B * T * D * a);
    p.qkv = DeviceBuffer(B * T * 3 * D * a);
    p.att = DeviceBuffer(B * T * D * a);
    p.hidden = DeviceBuffer(B * T * M * a);
    p.cls = DeviceBuffer(B * D * a);
    p.logits = DeviceBuffer(B * shape_.num_classes * f);
  }

  // Records body() once; a failure ends the capture so the stream stays usable.
  void capture(Plan& p) {
    const cudaStream_t s = stream_.get();
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      body(p);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(s, &broken);
      if (broken) cudaGraphDestroy(broken);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    try {
      p.graph = std::make_unique<GraphExec>(graph);
    } catch (...) {
      cudaGraphDestroy(graph);
      throw;
    }
    CUDA_CHECK(cudaGraphDestroy(graph));
  }

  // -- the forward after im2col: what the graph holds --

  void body(Plan& p) {
    const ViTShape& s = shape_;
    const cudaStream_t st = stream_.get();
    const int B = p.batch, N = s.patches(), T = s.tokens(), D = s.embed_dim, M = s.mlp_dim;
    const int PD = s.patch_dim(), rows = B * T;
    const float eps = s.ln_eps;
    float* x = p.x.as<float>();
    Act* h = p.h.as<Act>();

    if (s.patch_norm_pre)  // over each flattened patch, in (c, ph, pw) order
      layernorm<float, Act>(p.patches_raw.as<float>(), PD, norm_pre_w_.as<float>(), norm_pre_b_.as<float>(),
                            p.patches.as<Act>(), B * N, PD, eps, st);
    matmul<Act, float>(p.patches.as<Act>(), patch_w_.as<Act>(), patch_b_.as<float>(), nullptr,
                       p.embedded.as<float>(), B * N, D, PD, Epilogue::kNone, st);
    const float* embedded = p.embedded.as<float>();
    if (s.patch_norm_post) {
      layernorm<float, float>(embedded, D, norm_post_w_.as<float>(), norm_post_b_.as<float>(),
                              p.embedded_norm.as<float>(), B * N, D, eps, st);
      embedded = p.embedded_norm.as<float>();
    }
    embed_tokens(embedded, cls_token_.as<float>(), pos_embed_.as<float>(), x, B, T, D, st);

    for (const Block& b : blocks_) {
      // x = x + proj(attention(qkv(norm1(x))))
      layernorm<float, Act>(x, D, b.norm1_w.as<float>(), b.norm1_b.as<float>(), h, rows, D, eps, st);
      matmul<Act, Act>(h, b.qkv_w.as<Act>(), b.qkv_b.as<float>(), nullptr, p.qkv.as<Act>(), rows,
                       3 * D, D, Epilogue::kNone, st);
      attention<Act>(p.qkv.as<Act>(), p.att.as<Act>(), B, T, D, s.num_heads, st);
      matmul<Act, float>(p.att.as<Act>(), b.proj_w.as<Act>(), b.proj_b.as<float>(), x, x, rows, D,
                         D, Epilogue::kResidual, st);
      // x = x + fc2(gelu(fc1(norm2(x))))
      layernorm<float, Act>(x, D, b.norm2_w.as<float>(), b.norm2_b.as<float>(), h, rows, D, eps, st);
      matmul<Act, Act>(h, b.fc1_w.as<Act>(), b.fc1_b.as<float>(), nullptr, p.hidden.as<Act>(), rows,
                       M, D, s.gelu, st);
      matmul<Act, float>(p.hidden.as<Act>(), b.fc2_w.as<Act>(), b.fc2_b.as<float>(), x, x, rows, D,
                         M, Epilogue::kResidual, st);
    }

    // LayerNorm is per token, so normalising only the class tokens (row stride T * D) suffices.
    layernorm<float, Act>(x, static_cast<long long>(T) * D, norm_w_.as<float>(), norm_b_.as<float>(),
                          p.cls.as<Act>(), B, D, eps, st);
    matmul<Act, float>(p.cls.as<Act>(), head_w_.as<Act>(), head_b_.as<float>(), nullptr,
                       p.logits.as<float>(), B, s.num_classes, D, Epilogue::kNone, st);
  }

  SelectDevice selected_;  // first: every member below lives on this device
  ViTShape shape_;
  bool use_graph_;
  Stream stream_;
  DeviceBuffer norm_pre_w_, norm_pre_b_;    // (PD,) float
  DeviceBuffer patch_w_, patch_b_;          // (D, PD) Act, (D,) float
  DeviceBuffer norm_post_w_, norm_post_b_;  // (D,) float
  DeviceBuffer cls_token_, pos_embed_;      // (D,), (T, D) float
  std::vector<Block> blocks_;
  DeviceBuffer norm_w_, norm_b_;            // (D,) float
  DeviceBuffer head_w_, head_b_;            // (classes, D) Act, (classes,) float
  std::map<int, std::unique_ptr<Plan>> plans_;
  unsigned long long clock_ = 0;
};

std::unique_ptr<Engine> make_engine(const ViTShape& shape, const HostWeights& weights,
                                    const std::string& precision, int device, bool use_graph) {
  require(precision == "fp32" || precision == "bf16" || precision == "fp16",
          "precision must be fp32, bf16 or fp16, got " + precision);
  shape.validate();
  validate_weights(shape, weights);
  if (precision == "fp32") return std::make_unique<ViTEngine<float>>(shape, weights, device, use_graph);
  if (precision == "bf16") return std::make_unique<ViTEngine<bf16>>(shape, weights, device, use_graph);
  return std::make_unique<ViTEngine<fp16>>(shape, weights, device, use_graph);
}

}  // namespace polyvit_cuda
