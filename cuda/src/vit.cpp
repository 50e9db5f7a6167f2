// The ViT forward pass (pre-norm blocks, class-token pooling) as a sequence of kernel launches,
// following polyvit/reference.py op for op. The residual stream x stays fp32 in every precision;
// in bf16/fp16 the linear inputs (normed activations, qkv, attention output, MLP hidden) and
// the weights are 16-bit, and every bias, norm and softmax is computed in fp32.
#include "vit.h"

#include <algorithm>
#include <set>
#include <type_traits>
#include <utility>

#include "attention.cuh"
#include "cast.cuh"
#include "device.h"
#include "embed_tokens.cuh"
#include "layernorm.cuh"
#include "linear_fp32.cuh"
#include "linear_tc.cuh"
#include "patch_embed.cuh"

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

static std::string shape_text(const std::vector<long long>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// The host tensors by name. take() looks one up where it is bound and checks its shape there;
// finish() refuses whatever nothing took. std::invalid_argument names the tensor and the shapes.
class WeightTable {
 public:
  explicit WeightTable(const HostWeights& weights) : weights_(weights) {}

  const HostTensor& take(const std::string& name, const std::vector<long long>& shape) {
    const auto it = weights_.find(name);
    require(it != weights_.end(), "weights: missing tensor " + name + " of shape " + shape_text(shape));
    require(it->second.shape == shape, "weights: tensor " + name + " has shape " +
                                           shape_text(it->second.shape) + ", expected " + shape_text(shape));
    require(it->second.data != nullptr, "weights: tensor " + name + " has no data");
    taken_.insert(name);
    return it->second;
  }

  void finish() const {
    for (const auto& [name, tensor] : weights_)
      require(taken_.count(name) == 1, "weights: unexpected tensor " + name + " " +
                                           shape_text(tensor.shape) + " for this config");
  }

 private:
  const HostWeights& weights_;
  std::set<std::string> taken_;
};

// One block's weights: linear weights in the engine's element type Act, the rest float.
struct Block {
  DeviceBuffer norm1_w, norm1_b;  // (D,) float
  DeviceBuffer qkv_w, qkv_b;      // (3D, D) Act, (3D,) float or none
  DeviceBuffer proj_w, proj_b;    // (D, D) Act, (D,) float
  DeviceBuffer norm2_w, norm2_b;  // (D,) float
  DeviceBuffer fc1_w, fc1_b;      // (M, D) Act, (M,) float
  DeviceBuffer fc2_w, fc2_b;      // (D, M) Act, (D,) float
};

// Every weight of the model on the device.
struct Weights {
  DeviceBuffer norm_pre_w, norm_pre_b;    // (PD,) float
  DeviceBuffer patch_w, patch_b;          // (D, PD) Act, (D,) float
  DeviceBuffer norm_post_w, norm_post_b;  // (D,) float
  DeviceBuffer cls_token, pos_embed;      // (D,), (T, D) float
  std::vector<Block> blocks;
  DeviceBuffer norm_w, norm_b;            // (D,) float
  DeviceBuffer head_w, head_b;            // (classes, D) Act, (classes,) float
};

enum class Kind { kFloat, kAct };  // kept fp32, or converted to the engine's element type

// Calls bind(buffer, name, shape, kind) for every tensor the config needs, with the buffer of w
// it goes to: the one place that names the tensors, used to check them and to upload them.
template <class Bind>
static void bind_weights(const ViTShape& s, Weights& w, Bind&& bind) {
  const long long d = s.embed_dim, m = s.mlp_dim, p = s.patch_size, c = s.in_chans;
  const Kind f32 = Kind::kFloat, act = Kind::kAct;
  if (s.patch_norm_pre) {
    bind(w.norm_pre_w, "patch_embed.norm_pre.weight", {s.patch_dim()}, f32);
    bind(w.norm_pre_b, "patch_embed.norm_pre.bias", {s.patch_dim()}, f32);
  }
  bind(w.patch_w, "patch_embed.proj.weight", {d, c, p, p}, act);  // = (D, PD): im2col's column order
  bind(w.patch_b, "patch_embed.proj.bias", {d}, f32);
  if (s.patch_norm_post) {
    bind(w.norm_post_w, "patch_embed.norm.weight", {d}, f32);
    bind(w.norm_post_b, "patch_embed.norm.bias", {d}, f32);
  }
  bind(w.cls_token, "cls_token", {1, 1, d}, f32);
  bind(w.pos_embed, "pos_embed", {1, s.tokens(), d}, f32);
  w.blocks.resize(s.depth);
  for (int i = 0; i < s.depth; ++i) {
    const std::string name = "blocks." + std::to_string(i) + ".";
    Block& b = w.blocks[i];
    bind(b.norm1_w, name + "norm1.weight", {d}, f32);
    bind(b.norm1_b, name + "norm1.bias", {d}, f32);
    bind(b.qkv_w, name + "attn.qkv.weight", {3 * d, d}, act);
    if (s.qkv_bias) bind(b.qkv_b, name + "attn.qkv.bias", {3 * d}, f32);
    bind(b.proj_w, name + "attn.proj.weight", {d, d}, act);
    bind(b.proj_b, name + "attn.proj.bias", {d}, f32);
    bind(b.norm2_w, name + "norm2.weight", {d}, f32);
    bind(b.norm2_b, name + "norm2.bias", {d}, f32);
    bind(b.fc1_w, name + "mlp.fc1.weight", {m, d}, act);
    bind(b.fc1_b, name + "mlp.fc1.bias", {m}, f32);
    bind(b.fc2_w, name + "mlp.fc2.weight", {d, m}, act);
    bind(b.fc2_b, name + "mlp.fc2.bias", {d}, f32);
  }
  bind(w.norm_w, "norm.weight", {d}, f32);
  bind(w.norm_b, "norm.bias", {d}, f32);
  bind(w.head_w, "head.weight", {s.num_classes, d}, act);
  bind(w.head_b, "head.bias", {s.num_classes}, f32);
}

// The names and shapes alone, before the device is touched (no buffer is allocated).
static void check_weights(const ViTShape& s, const HostWeights& host) {
  WeightTable table(host);
  Weights unused;
  bind_weights(s, unused, [&](DeviceBuffer&, const std::string& name,
                              const std::vector<long long>& shape, Kind) { table.take(name, shape); });
  table.finish();
}

// ---- the engine --------------------------------------------------------------------------------------

// out = epilogue(a @ w^T + bias): fp32 on CUDA cores, 16-bit types on tensor cores.
template <class Act, class TOut>
static void linear(const Act* a, const Act* w, const float* bias, const float* residual, TOut* out,
                   int M, int N, int K, Epilogue epilogue, cudaStream_t stream, RowStrides strides = {}) {
  if constexpr (std::is_same_v<Act, float>) {
    static_assert(std::is_same_v<TOut, float>, "the fp32 path writes fp32");
    linear_fp32(a, w, bias, residual, out, M, N, K, epilogue, stream, strides);
  } else {
    linear_tc<Act, TOut>(a, w, bias, residual, out, M, N, K, epilogue, stream, strides);
  }
}

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
  DeviceBuffer qkv;            // (B * T, 3D) Act; in the last block (B * T, 2D): k | v only
  DeviceBuffer att;            // (B * T, D) Act: attention output; (B, D) in the last block
  DeviceBuffer hidden;         // (B * T, M) Act: GELU(fc1); (B, M) in the last block
  DeviceBuffer x_cls;          // (B, D) float: the class tokens' residual stream after last proj
  DeviceBuffer h_cls;          // (B, D) Act: its LayerNorm outputs
  DeviceBuffer q_cls;          // (B, D) Act: their queries
  DeviceBuffer logits;         // (B, classes) float
  std::unique_ptr<GraphExec> graph;
};

template <class Act>
class ViTEngine final : public Engine {
 public:
  ViTEngine(const ViTShape& shape, const HostWeights& weights, int device, bool use_graph,
            int batch_sizes_kept)
      : device_(device), shape_(shape), use_graph_(use_graph), plans_kept_(batch_sizes_kept) {
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
    // patch_embed's gather stays outside the graph: it reads the caller's buffer, whose address
    // changes per call. Its linear is the graph's first node.
    const int C = shape_.in_chans, H = shape_.image_size, P = shape_.patch_size;
    if (shape_.patch_norm_pre)
      patch_embed_gather<float>(images, plan.patches_raw.as<float>(), batch, C, H, H, P, s);
    else
      patch_embed_gather<Act>(images, plan.patches.as<Act>(), batch, C, H, H, P, s);
    if (plan.graph)
      plan.graph->launch(s);
    else
      body(plan);
    return plan.logits.as<float>();
  }

  cudaStream_t stream() const override { return stream_.get(); }
  int device() const override { return device_; }

  std::vector<int> cached_batch_sizes() const override {  // least recently used first
    std::vector<const Plan*> plans;
    for (const auto& [batch, plan] : plans_) plans.push_back(plan.get());
    std::sort(plans.begin(), plans.end(), [](const Plan* a, const Plan* b) { return a->last_used < b->last_used; });
    std::vector<int> sizes;
    for (const Plan* plan : plans) sizes.push_back(plan->batch);
    return sizes;
  }

  void clear_cache() override { plans_.clear(); }

 private:
  static constexpr int kMaxBatch = 65535;  // the attention grid's z dimension

  size_t image_elements(int batch) const {
    return static_cast<size_t>(batch) * shape_.in_chans * shape_.image_size * shape_.image_size;
  }

  // -- weights --

  // Each tensor is looked up by name and its shape checked where it is uploaded.
  void upload(const HostWeights& host) {
    std::vector<DeviceBuffer> staging;  // fp32 copies of Act weights, alive until the casts ran
    const cudaStream_t s = stream_.get();
    WeightTable table(host);
    bind_weights(shape_, w_, [&](DeviceBuffer& buffer, const std::string& name,
                                 const std::vector<long long>& shape, Kind kind) {
      const HostTensor& t = table.take(name, shape);
      size_t n = 1;
      for (long long d : t.shape) n *= static_cast<size_t>(d);
      DeviceBuffer f32(n * sizeof(float));
      CUDA_CHECK(cudaMemcpyAsync(f32.as<float>(), t.data, n * sizeof(float), cudaMemcpyHostToDevice, s));
      if constexpr (!std::is_same_v<Act, float>) {
        if (kind == Kind::kAct) {
          buffer = DeviceBuffer(n * sizeof(Act));
          cast<float, Act>(f32.as<float>(), buffer.as<Act>(), n, s);
          staging.push_back(std::move(f32));
          return;
        }
      }
      buffer = std::move(f32);
    });
    table.finish();
    CUDA_CHECK(cudaStreamSynchronize(s));  // the host arrays and the staging may go now
  }

  // -- plans --

  Plan& plan_for(int batch) {
    const auto found = plans_.find(batch);
    if (found != plans_.end()) {
      found->second->last_used = ++clock_;
      return *found->second;
    }
    while (!plans_.empty() && plans_.size() >= static_cast<size_t>(plans_kept_)) {
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
    p.x_cls = DeviceBuffer(B * D * f);
    p.h_cls = DeviceBuffer(B * D * a);
    p.q_cls = DeviceBuffer(B * D * a);
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

  // -- the forward after patch_embed's gather: what the graph holds --

  void body(Plan& p) {
    const ViTShape& s = shape_;
    const cudaStream_t st = stream_.get();
    const int B = p.batch, N = s.patches(), T = s.tokens(), D = s.embed_dim;
    const int PD = s.patch_dim();
    const float eps = s.ln_eps;
    float* x = p.x.as<float>();

    if (s.patch_norm_pre)  // over each flattened patch, in (c, ph, pw) order
      layernorm<float, Act>(p.patches_raw.as<float>(), PD, w_.norm_pre_w.as<float>(), w_.norm_pre_b.as<float>(),
                            p.patches.as<Act>(), B * N, PD, eps, st);
    linear<Act, float>(p.patches.as<Act>(), w_.patch_w.as<Act>(), w_.patch_b.as<float>(), nullptr,
                       p.embedded.as<float>(), B * N, D, PD, Epilogue::kNone, st);
    const float* embedded = p.embedded.as<float>();
    if (s.patch_norm_post) {
      layernorm<float, float>(embedded, D, w_.norm_post_w.as<float>(), w_.norm_post_b.as<float>(),
                              p.embedded_norm.as<float>(), B * N, D, eps, st);
      embedded = p.embedded_norm.as<float>();
    }
    embed_tokens(embedded, w_.cls_token.as<float>(), w_.pos_embed.as<float>(), x, B, T, D, st);

    for (size_t i = 0; i + 1 < w_.blocks.size(); ++i) block(p, w_.blocks[i]);
    last_block(p, w_.blocks.back());

    Act* cls = p.h_cls.as<Act>();  // (B, D): the final norm of the class tokens
    layernorm<float, Act>(p.x_cls.as<float>(), D, w_.norm_w.as<float>(), w_.norm_b.as<float>(), cls, B, D,
                          eps, st);
    linear<Act, float>(cls, w_.head_w.as<Act>(), w_.head_b.as<float>(), nullptr, p.logits.as<float>(), B,
                       s.num_classes, D, Epilogue::kNone, st);
  }

  // Every token: x = x + proj(attention(qkv(norm1(x)))), then x = x + fc2(gelu(fc1(norm2(x)))).
  void block(Plan& p, const Block& b) {
    const ViTShape& s = shape_;
    const cudaStream_t st = stream_.get();
    const int B = p.batch, T = s.tokens(), D = s.embed_dim, M = s.mlp_dim, rows = B * T;
    const float eps = s.ln_eps;
    float* x = p.x.as<float>();
    Act* h = p.h.as<Act>();
    layernorm<float, Act>(x, D, b.norm1_w.as<float>(), b.norm1_b.as<float>(), h, rows, D, eps, st);
    linear<Act, Act>(h, b.qkv_w.as<Act>(), b.qkv_b.as<float>(), nullptr, p.qkv.as<Act>(), rows, 3 * D,
                     D, Epilogue::kNone, st);
    attention<Act>(p.qkv.as<Act>(), p.att.as<Act>(), B, T, D, s.num_heads, st);
    linear<Act, float>(p.att.as<Act>(), b.proj_w.as<Act>(), b.proj_b.as<float>(), x, x, rows, D, D,
                       Epilogue::kResidual, st);
    layernorm<float, Act>(x, D, b.norm2_w.as<float>(), b.norm2_b.as<float>(), h, rows, D, eps, st);
    linear<Act, Act>(h, b.fc1_w.as<Act>(), b.fc1_b.as<float>(), nullptr, p.hidden.as<Act>(), rows, M, D,
                     s.gelu, st);
    linear<Act, float>(p.hidden.as<Act>(), b.fc2_w.as<Act>(), b.fc2_b.as<float>(), x, x, rows, D, M,
                       Epilogue::kResidual, st);
  }

  // The last block for the class tokens only, as the head reads nothing else: K and V of every
  // token, then the query, attention, proj and MLP of the B class rows. The class rows of h and x
  // are read in place (row stride T * D); proj writes them densely into x_cls.
  void last_block(Plan& p, const Block& b) {
    const ViTShape& s = shape_;
    const cudaStream_t st = stream_.get();
    const int B = p.batch, T = s.tokens(), D = s.embed_dim, M = s.mlp_dim, rows = B * T;
    const float eps = s.ln_eps;
    const long long class_stride = static_cast<long long>(T) * D;  // x[:, 0] and h[:, 0]
    const float* x = p.x.as<float>();
    float* x_cls = p.x_cls.as<float>();
    Act* h = p.h.as<Act>();
    Act* h_cls = p.h_cls.as<Act>();
    Act* kv = p.qkv.as<Act>();  // (B * T, 2D)
    const Act* qkv_w = b.qkv_w.as<Act>();
    const float* qkv_b = b.qkv_b.as<float>();
    const size_t DD = static_cast<size_t>(D) * D;
    // k | v: rows D .. 3D of the qkv weight (3D, D) and its bias; q: rows 0 .. D, class rows only.
    layernorm<float, Act>(x, D, b.norm1_w.as<float>(), b.norm1_b.as<float>(), h, rows, D, eps, st);
    linear<Act, Act>(h, qkv_w + DD, qkv_b ? qkv_b + D : nullptr, nullptr, kv, rows, 2 * D, D,
                     Epilogue::kNone, st);
    linear<Act, Act>(h, qkv_w, qkv_b, nullptr, p.q_cls.as<Act>(), B, D, D, Epilogue::kNone, st,
                     RowStrides{class_stride, 0});
    attention_class_query<Act>(p.q_cls.as<Act>(), kv, p.att.as<Act>(), B, T, D, s.num_heads, st);
    // x_cls = x[:, 0] + proj(attention)
    linear<Act, float>(p.att.as<Act>(), b.proj_w.as<Act>(), b.proj_b.as<float>(), x, x_cls, B, D, D,
                       Epilogue::kResidual, st, RowStrides{0, class_stride});
    layernorm<float, Act>(x_cls, D, b.norm2_w.as<float>(), b.norm2_b.as<float>(), h_cls, B, D, eps, st);
    linear<Act, Act>(h_cls, b.fc1_w.as<Act>(), b.fc1_b.as<float>(), nullptr, p.hidden.as<Act>(), B, M, D,
                     s.gelu, st);
    linear<Act, float>(p.hidden.as<Act>(), b.fc2_w.as<Act>(), b.fc2_b.as<float>(), x_cls, x_cls, B, D, M,
                       Epilogue::kResidual, st);
  }

  int device_;             // every member below lives on it (make_engine makes it current)
  ViTShape shape_;
  bool use_graph_;
  int plans_kept_;         // batch sizes whose plans are kept; the least recently used goes
  Stream stream_;
  Weights w_;
  std::map<int, std::unique_ptr<Plan>> plans_;
  unsigned long long clock_ = 0;
};

std::unique_ptr<Engine> make_engine(const ViTShape& shape, const HostWeights& weights,
                                    const std::string& precision, int device, bool use_graph,
                                    int batch_sizes_kept) {
  require(precision == "fp32" || precision == "bf16" || precision == "fp16",
          "precision must be fp32, bf16 or fp16, got " + precision);
  require(batch_sizes_kept >= 1, "batch_sizes_kept must be at least 1");
  shape.validate();
  check_weights(shape, weights);
  DeviceScope scope(device);  // the engine allocates on its device; the caller's is restored after
  if (precision == "fp32")
    return std::make_unique<ViTEngine<float>>(shape, weights, device, use_graph, batch_sizes_kept);
  if (precision == "bf16")
    return std::make_unique<ViTEngine<bf16>>(shape, weights, device, use_graph, batch_sizes_kept);
  return std::make_unique<ViTEngine<fp16>>(shape, weights, device, use_graph, batch_sizes_kept);
}

}  // namespace polyvit_cuda
