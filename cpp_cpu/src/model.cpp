// model.cpp — the ViT forward pass (python/polyvit/reference.py is the spec it follows).
//
// All activations are token rows: the batch is flattened to B*T rows, so every linear layer
// is one GEMM whatever the batch. One OpenMP parallel region runs the whole pass; ops split
// their work over its threads and meet at a barrier before the next op reads their output.
#include "model.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "ops.h"
#include "patch_embed.h"

namespace polyvit::cpu {

// ---- weights by name ---------------------------------------------------------------------------

namespace {

std::string shape_str(const std::vector<long>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

Buffer<float> copy_of(const float* p, long n) {
  Buffer<float> b(n);
  std::memcpy(b.data(), p, sizeof(float) * n);
  return b;
}

}  // namespace

void WeightMap::add(const std::string& name, const float* data, std::vector<long> shape) {
  entries_[name] = Entry{data, std::move(shape)};
}

const float* WeightMap::take(const std::string& name, const std::vector<long>& shape) {
  const auto it = entries_.find(name);
  if (it == entries_.end())
    throw std::invalid_argument("weights has no tensor '" + name + "' (shape " +
                                shape_str(shape) + ") for this config");
  if (it->second.shape != shape)
    throw std::invalid_argument("weights['" + name + "'] has shape " +
                                shape_str(it->second.shape) + ", expected " + shape_str(shape) +
                                " for this config");
  it->second.taken = true;
  return it->second.data;
}

void WeightMap::finish() const {
  std::string extra;
  for (const auto& [name, entry] : entries_)
    if (!entry.taken) extra += (extra.empty() ? "'" : ", '") + name + "'";
  if (!extra.empty())
    throw std::invalid_argument("weights has tensors this config does not use: " + extra +
                                "; remove them");
}

// ---- loading -----------------------------------------------------------------------------------

Model::Model(const Dims& d, WeightMap& w, Precision precision, int threads,
             const std::string& isa, int batch_sizes_kept)
    : d_(d), engine_(engine_for(precision, isa)), threads_(threads), kept_(batch_sizes_kept) {
  const long D = d.dim, M = d.mlp, T = d.tokens();
  auto vec = [&](const std::string& name, long n) { return copy_of(w.take(name, {n}), n); };
  // name.weight (n, k) and, when `bias`, name.bias (n,), packed in precision p
  auto layer = [&](const std::string& name, long n, long k, Precision p, bool bias = true) {
    const float* weight = w.take(name + ".weight", {n, k});
    return pack_linear(weight, bias ? w.take(name + ".bias", {n}) : nullptr, static_cast<int>(n),
                       static_cast<int>(k), p, engine_.nr(p));
  };
  if (d.norm_pre) {
    norm_pre_w_ = vec("patch_embed.norm_pre.weight", d.patch_dim());
    norm_pre_b_ = vec("patch_embed.norm_pre.bias", d.patch_dim());
  }
  // (D, C, P, P) is already (D, C*P*P) in im2col's (c, py, px) order
  patch_ = pack_linear(w.take("patch_embed.proj.weight", {D, d.chans, d.patch, d.patch}),
                       w.take("patch_embed.proj.bias", {D}), d.dim, d.patch_dim(), precision,
                       engine_.nr(precision));
  if (d.norm_post) {
    norm_post_w_ = vec("patch_embed.norm.weight", D);
    norm_post_b_ = vec("patch_embed.norm.bias", D);
  }
  cls_ = copy_of(w.take("cls_token", {1, 1, D}), D);
  pos_ = copy_of(w.take("pos_embed", {1, T, D}), T * D);
  blocks_.resize(d.depth);
  for (int i = 0; i < d.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    Block& blk = blocks_[i];
    blk.ln1_w = vec(b + "norm1.weight", D);
    blk.ln1_b = vec(b + "norm1.bias", D);
    if (i + 1 < d.depth) {
      blk.qkv = layer(b + "attn.qkv", 3 * D, D, precision, d.qkv_bias);
    } else {  // (3D, D): rows q, then k, then v
      const float* qkv_w = w.take(b + "attn.qkv.weight", {3 * D, D});
      const float* qkv_b = d.qkv_bias ? w.take(b + "attn.qkv.bias", {3 * D}) : nullptr;
      const int nr = engine_.nr(precision);
      blk.q = pack_linear(qkv_w, qkv_b, d.dim, d.dim, precision, nr);
      blk.kv = pack_linear(qkv_w + D * D, qkv_b ? qkv_b + D : nullptr, 2 * d.dim, d.dim,
                           precision, nr);
    }
    blk.proj = layer(b + "attn.proj", D, D, precision);
    blk.ln2_w = vec(b + "norm2.weight", D);
    blk.ln2_b = vec(b + "norm2.bias", D);
    blk.fc1 = layer(b + "mlp.fc1", M, D, precision);
    blk.fc2 = layer(b + "mlp.fc2", D, M, precision);
  }
  norm_w_ = vec("norm.weight", D);
  norm_b_ = vec("norm.bias", D);
  // the head is 0.04% of the work: it stays fp32 so reduced precisions round logits once less
  head_ = layer("head", d.classes, D, Precision::F32);
  w.finish();
}

// ---- workspaces --------------------------------------------------------------------------------

long Model::scratch_stride() const {  // attention scratch floats per thread, either form
  const int block = std::max(engine_.f32->attention_block,
                             engine_.bf16 ? engine_.bf16->attention_block : 0);
  return attention_scratch(block, attention_tp(d_.tokens()), d_.head_dim());
}

bool Model::fuses_mlp(int batch) const {
  return (engine_.bf16 || engine_.int8) &&
         static_cast<long>(batch) * d_.tokens() >= static_cast<long>(threads_) * kMlpMinRows;
}

long Model::operand_kp() const {  // the widest K of any layer, rounded up for either precision
  return (std::max({d_.dim, d_.mlp, d_.patch_dim()}) + 3) / 4 * 4;
}

std::unique_ptr<Model::Workspace> Model::make_workspace(int batch) const {
  auto ws = std::make_unique<Workspace>();
  const long B = batch, T = d_.tokens(), D = d_.dim, N = d_.patches();
  const int tp = attention_tp(d_.tokens());
  const long kp = operand_kp();
  ws->x.reserve(B * T * D);
  ws->h.reserve(B * T * D);
  ws->qkv.reserve(B * T * 3 * D);
  ws->mlp.reserve(B * T * d_.mlp);
  ws->kt.reserve(B * D * tp);
  ws->patches.reserve(B * N * d_.patch_dim());
  ws->cls.reserve(B * D);
  ws->scratch.reserve(threads_ * scratch_stride());
  if (engine_.bf16) {
    const long mp = (d_.mlp + 1) / 2 * 2, hdp = (d_.head_dim() + 1) / 2 * 2;
    ws->kt16.reserve(B * d_.heads * hdp * tp);
    ws->v16.reserve(B * d_.heads * hdp * tp);
    ws->a16.reserve(B * T * kp);
    ws->mlp16.reserve(B * T * mp);
    std::memset(ws->mlp16.data(), 0, sizeof(uint16_t) * B * T * mp);
  }
  if (engine_.int8) {
    ws->a8.reserve(B * T * kp);
    ws->a_scale.reserve(B * T);
    ws->a_zero.reserve(B * T);
  }
  const long chunk_rows = static_cast<long>(threads_) * kMlpChunk;
  if (engine_.int8 || fuses_mlp(batch)) ws->chunk_h.reserve(chunk_rows * D);
  if (fuses_mlp(batch)) {
    ws->chunk_mlp.reserve(chunk_rows * d_.mlp);
    if (engine_.bf16) {  // chunk_mlp holds fc1's bf16 output: its padding column stays 0
      ws->chunk_a16.reserve(chunk_rows * kp);
      std::memset(ws->chunk_mlp.data(), 0, sizeof(float) * chunk_rows * d_.mlp);
    }
    if (engine_.int8) {
      ws->chunk_a8.reserve(chunk_rows * kp);
      ws->chunk_scale.reserve(chunk_rows);
      ws->chunk_zero.reserve(chunk_rows);
    }
  }
  ws->batch = batch;
  return ws;
}

// The policy of polyvit.backends._native.BatchCache: a call makes its batch size the most
// recently used; a new size beyond kept_ drops the least recently used one. A workspace is
// built outside the lock, and calls of one size at once each get their own.
std::unique_ptr<Model::Workspace> Model::acquire(int batch) {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    auto it = std::find_if(pool_.begin(), pool_.end(),
                           [&](const Cached& c) { return c.batch == batch; });
    if (it != pool_.end()) {
      pool_.splice(pool_.end(), pool_, it);
      if (!it->idle.empty()) {
        std::unique_ptr<Workspace> ws = std::move(it->idle.back());
        it->idle.pop_back();
        return ws;
      }
    } else {
      pool_.push_back(Cached{batch, {}});
      while (static_cast<int>(pool_.size()) > kept_) pool_.pop_front();
    }
  }
  return make_workspace(batch);
}

void Model::release(std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  for (Cached& c : pool_)
    if (c.batch == ws->batch) {
      c.idle.push_back(std::move(ws));
      return;
    }
  // its batch size was dropped (or the cache cleared) while it ran: ws is freed here
}

std::vector<int> Model::cached_batch_sizes() {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  std::vector<int> sizes;
  for (const Cached& c : pool_) sizes.push_back(c.batch);
  return sizes;
}

void Model::clear_cache() {
  std::list<Cached> dropped;
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    dropped.swap(pool_);
  }  // freed outside the lock
}

// ---- forward -----------------------------------------------------------------------------------

void Model::norm_operand(const float* x, long r0, long r1, const Buffer<float>& w,
                         const Buffer<float>& b, const Operand& op, long kp, float* h) const {
  const int D = d_.dim;
  if (engine_.bf16) {
    if (r0 < r1)
      engine_.bf16->layernorm(x + r0 * D, D, op.a16 + r0 * kp, kp, static_cast<int>(r1 - r0), D,
                              static_cast<int>(kp), w.data(), b.data(), d_.eps);
    return;
  }
  for (long c0 = r0; c0 < r1; c0 += kMlpChunk) {  // int8
    const int n = static_cast<int>(std::min<long>(kMlpChunk, r1 - c0));
    engine_.f32->layernorm(x + c0 * D, D, h, D, n, D, w.data(), b.data(), d_.eps);
    engine_.int8->quantize(h, D, op.a8 + c0 * kp, kp, op.scale + c0, op.zero + c0, n, D,
                           static_cast<int>(kp));
  }
}

void Model::mlp_rows(const Block& blk, Workspace& ws, int thread, float* x, long r0,
                     long r1) const {
  const int D = d_.dim, M = d_.mlp, C = kMlpChunk;
  const long kp = operand_kp();
  const Epilogue gelu = d_.gelu_tanh ? Epilogue::GeluTanh : Epilogue::GeluErf;
  float* h = ws.chunk_h.data() + thread * C * D;
  float* mlp = ws.chunk_mlp.data() + thread * C * M;
  Operand op;  // this thread's chunk of the operands, at the widest stride either layer uses
  if (engine_.bf16) op.a16 = ws.chunk_a16.data() + thread * C * kp;
  if (engine_.int8) {
    op.a8 = ws.chunk_a8.data() + thread * C * kp;
    op.scale = ws.chunk_scale.data() + thread * C;
    op.zero = ws.chunk_zero.data() + thread * C;
  }
  for (long c0 = r0; c0 < r1; c0 += C) {
    const int n = static_cast<int>(std::min<long>(C, r1 - c0));
    float* xc = x + c0 * D;
    norm_operand(xc, 0, n, blk.ln2_w, blk.ln2_b, op, blk.fc1.kp, h);
    if (engine_.bf16) {  // as in forward: fc1 writes fc2's operand
      uint16_t* mlp16 = reinterpret_cast<uint16_t*>(mlp);  // (C, fc2.kp): half its room
      linear_alone(engine_, blk.fc1, nullptr, 0, n, nullptr, mlp16, blk.fc2.kp, gelu, nullptr,
                   0, op);
      linear_alone(engine_, blk.fc2, nullptr, 0, n, xc, nullptr, D, Epilogue::Residual, xc, D,
                   Operand{mlp16, nullptr, nullptr, nullptr});
    } else {
      linear_alone(engine_, blk.fc1, nullptr, 0, n, mlp, nullptr, M, gelu, nullptr, 0, op);
      linear_alone(engine_, blk.fc2, mlp, M, n, xc, nullptr, D, Epilogue::Residual, xc, D, op);
    }
  }
}

const char* Model::op_name(int op) {
  static const char* const names[kOps] = {"patch_embed", "layernorm", "qkv", "attention",
                                          "proj", "fc1", "fc2", "mlp", "head"};
  return names[op];
}

void Model::forward(const float* images, int batch, float* logits, double* seconds,
                    float* maps) {
  std::unique_ptr<Workspace> ws = acquire(batch);
  const Dims& d = d_;
  const Kernels& k = *engine_.f32;
  const int T = d.tokens(), D = d.dim, M = d.mlp, tp = attention_tp(T);
  const int rows = batch * T;
  const Operand op{ws->a16.data(), ws->a8.data(), ws->a_scale.data(), ws->a_zero.data()};
  const long scratch_stride = this->scratch_stride();
  float *x = ws->x.data(), *h = ws->h.data(), *qkv = ws->qkv.data(), *mlp = ws->mlp.data();
  const Epilogue gelu = d.gelu_tanh ? Epilogue::GeluTanh : Epilogue::GeluErf;
  const long map_size = static_cast<long>(batch) * d.heads * T * T;  // one block's maps
  const bool fuse_mlp = fuses_mlp(batch);
  if (maps && engine_.bf16) throw std::invalid_argument("attention maps need fp32 attention");

  parallel(threads_, [&](Team t) {
    // after a barrier, the team's first thread books the time since its last mark to op
    double last = seconds && t.id == 0 ? omp_get_wtime() : 0.0;
    auto mark = [&](Op op) {
      if (!seconds || t.id) return;
      const double now = omp_get_wtime();
      seconds[op] += now - last;
      last = now;
    };
    long r0, r1;
    // patch embedding: im2col (+ LayerNorm over each flattened patch), linear into h
    patch_embed(engine_, patch_,
                PatchEmbed{images, batch, d.chans, d.image, d.image, d.patch,
                           d.norm_pre ? norm_pre_w_.data() : nullptr, norm_pre_b_.data(), d.eps,
                           ws->patches.data(), h},
                op, t);
    barrier();
    t.split(rows, &r0, &r1);
    assemble_tokens(k, h, cls_.data(), pos_.data(), d.norm_post ? norm_post_w_.data() : nullptr,
                    norm_post_b_.data(), d.eps, T, D, x, r0, r1);
    barrier();
    mark(kPatchEmbed);

    // With bf16 blocks, LayerNorm writes the next GEMM's bf16 operand itself and fc1 writes
    // bf16 for fc2: those activations are never stored in fp32 and converted again. With int8
    // blocks LayerNorm writes the u8 operand (norm_operand).
    const bool bf16 = engine_.bf16 != nullptr, prepared = bf16 || engine_.int8;
    auto norm = [&](const Block& blk, const Buffer<float>& w, const Buffer<float>& b) {
      if (prepared) {
        t.split(rows, &r0, &r1);
        norm_operand(x, r0, r1, w, b, op, blk.fc1.kp,
                     ws->chunk_h.data() + static_cast<long>(t.id) * kMlpChunk * D);
      } else {
        layernorm(k, x, D, h, D, rows, D, w.data(), b.data(), d.eps, t);
      }
      barrier();
      mark(kLayerNorm);
    };

    for (int i = 0; i + 1 < d.depth; ++i) {
      const Block& blk = blocks_[i];
      // x = x + proj(attention(qkv(norm1(x))))
      norm(blk, blk.ln1_w, blk.ln1_b);
      if (prepared)
        linear_prepared(engine_, blk.qkv, rows, qkv, nullptr, 3 * D, Epilogue::Bias, nullptr, 0,
                        op, t);
      else
        linear(engine_, blk.qkv, h, D, rows, qkv, 3 * D, Epilogue::Bias, nullptr, 0, op, t);
      barrier();
      mark(kQkv);
      if (bf16) {  // bf16 dot products; the output rows are proj's bf16 operand
        Attention at{qkv, nullptr, nullptr, batch, T, D, d.heads, tp, T};
        at.kt16 = ws->kt16.data();
        at.v16 = ws->v16.data();
        at.out16 = op.a16;
        at.ldo16 = blk.proj.kp;
        attention_bf16(*engine_.bf16, at, ws->scratch.data(), scratch_stride, t);
      } else {
        Attention at{qkv, h, ws->kt.data(), batch, T, D, d.heads, tp, T};
        at.probs = maps ? maps + i * map_size : nullptr;  // (B, H, T, T)
        attention(k, at, ws->scratch.data(), scratch_stride, t);
      }
      barrier();
      mark(kAttention);
      if (bf16)
        linear_prepared(engine_, blk.proj, rows, x, nullptr, D, Epilogue::Residual, x, D, op, t);
      else
        linear(engine_, blk.proj, h, D, rows, x, D, Epilogue::Residual, x, D, op, t);
      barrier();
      mark(kProj);
      // x = x + fc2(gelu(fc1(norm2(x))))
      if (fuse_mlp) {  // each thread its own rows, start to end
        t.split(rows, &r0, &r1);
        mlp_rows(blk, *ws, t.id, x, r0, r1);
        barrier();
        mark(kMlp);
        continue;
      }
      norm(blk, blk.ln2_w, blk.ln2_b);
      if (bf16) {
        uint16_t* mlp16 = ws->mlp16.data();
        linear_prepared(engine_, blk.fc1, rows, nullptr, mlp16, blk.fc2.kp, gelu, nullptr, 0, op,
                        t);
        barrier();
        mark(kFc1);
        linear_prepared(engine_, blk.fc2, rows, x, nullptr, D, Epilogue::Residual, x, D,
                        Operand{mlp16, nullptr, nullptr, nullptr}, t);
      } else {
        if (prepared)
          linear_prepared(engine_, blk.fc1, rows, mlp, nullptr, M, gelu, nullptr, 0, op, t);
        else
          linear(engine_, blk.fc1, h, D, rows, mlp, M, gelu, nullptr, 0, op, t);
        barrier();
        mark(kFc1);
        linear(engine_, blk.fc2, mlp, M, rows, x, D, Epilogue::Residual, x, D, op, t);
      }
      barrier();
      mark(kFc2);
    }

    // The last block: only its class tokens reach the head, and everything after attention
    // is per token, so q, attention, proj and the MLP run for the class tokens alone (rows
    // b * T, stride T * D); keys and values still cover every token. 6% of the FLOPs of
    // ViT-S/32, and the class tokens' values are computed exactly as in a full block.
    const Block& top = blocks_.back();
    const long ldt = static_cast<long>(T) * D;  // from one class token to the next
    layernorm(k, x, D, h, D, rows, D, top.ln1_w.data(), top.ln1_b.data(), d.eps, t);
    barrier();
    mark(kLayerNorm);
    linear(engine_, top.kv, h, D, rows, qkv + D, 3 * D, Epilogue::Bias, nullptr, 0, op, t);
    barrier();
    if (maps)  // the whole map: every token's query (the class rows come out the same)
      linear(engine_, top.q, h, D, rows, qkv, 3 * D, Epilogue::Bias, nullptr, 0, op, t);
    else
      linear(engine_, top.q, h, ldt, batch, qkv, 3 * ldt, Epilogue::Bias, nullptr, 0, op, t);
    barrier();
    mark(kQkv);
    Attention at{qkv, h, ws->kt.data(), batch, T, D, d.heads, tp, maps ? T : 1};
    at.probs = maps ? maps + (d.depth - 1) * map_size : nullptr;
    attention(k, at, ws->scratch.data(), scratch_stride, t);
    barrier();
    mark(kAttention);
    linear(engine_, top.proj, h, ldt, batch, x, ldt, Epilogue::Residual, x, ldt, op, t);
    barrier();
    mark(kProj);
    layernorm(k, x, ldt, ws->cls.data(), D, batch, D, top.ln2_w.data(), top.ln2_b.data(), d.eps,
              t);
    barrier();
    mark(kLayerNorm);
    linear(engine_, top.fc1, ws->cls.data(), D, batch, mlp, M, gelu, nullptr, 0, op, t);
    barrier();
    mark(kFc1);
    linear(engine_, top.fc2, mlp, M, batch, x, ldt, Epilogue::Residual, x, ldt, op, t);
    barrier();
    mark(kFc2);

    // final LayerNorm of the class tokens, then the head
    layernorm(k, x, ldt, ws->cls.data(), D, batch, D, norm_w_.data(), norm_b_.data(), d.eps, t);
    barrier();
    linear(engine_, head_, ws->cls.data(), D, batch, logits, d.classes, Epilogue::Bias, nullptr,
           0, op, t);
    if (seconds) {
      barrier();
      mark(kHead);
    }
  });
  release(std::move(ws));
}

}  // namespace polyvit::cpu
