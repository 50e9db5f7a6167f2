// module.cpp — the Python boundary of polyvit._cpu (pybind11).
//
// Everything crossing it is checked here, whatever the Python wrapper already checked: arrays
// must be float32, C-contiguous and of the expected shape, or a TypeError / ValueError says
// what to pass instead. Inputs are used in place (no copies); compute runs without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "model.h"
#include "ops.h"
#include "patch_embed.h"

namespace py = pybind11;
using namespace polyvit::cpu;

namespace {

using F32 = py::array_t<float, py::array::c_style>;

// ---- boundary checks ---------------------------------------------------------------------------

std::string shape_str(const std::vector<long>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

std::vector<long> shape_of(const py::array& a) {
  return std::vector<long>(a.shape(), a.shape() + a.ndim());
}

// obj as a float32 C-contiguous array without copying it; `expected` uses -1 for any size.
F32 checked(py::handle obj, const std::string& name, const std::vector<long>& expected) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(name + " must be a numpy array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<float>()))
    throw py::type_error(name + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected float32: pass " + name + ".astype(numpy.float32)");
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i)
    ok = expected[i] < 0 || a.shape(i) == expected[i];
  if (!ok) {
    std::string want = "(";
    for (size_t i = 0; i < expected.size(); ++i)
      want += (i ? ", " : "") + (expected[i] < 0 ? std::string("any") : std::to_string(expected[i]));
    throw py::value_error(name + " has shape " + shape_str(shape_of(a)) + ", expected " + want +
                          (expected.size() == 1 ? ",)" : ")"));
  }
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(name + " is not C-contiguous (a transposed or strided view): pass "
                          "numpy.ascontiguousarray(" + name + ")");
  return F32::ensure(a);  // the same buffer: dtype and layout already match
}

void check_nonempty(const F32& a, const std::string& name) {
  for (py::ssize_t i = 0; i < a.ndim(); ++i)
    if (a.shape(i) == 0)
      throw py::value_error(name + " has shape " + shape_str(shape_of(a)) +
                            " with an empty axis; pass at least one element per axis");
}

// Native callers (benchmarks) may pass 0 for OpenMP's default; polyvit's Python layer always
// passes the parsed threads option.
int threads_or_default(int threads) {
  if (threads < 0) throw py::value_error("threads must be positive (or 0 for OMP_NUM_THREADS)");
  return threads > 0 ? threads : omp_get_max_threads();
}

// ---- the model ---------------------------------------------------------------------------------

template <class T>
T field(const py::dict& cfg, const char* key) {
  if (!cfg.contains(key)) throw py::value_error(std::string("config has no field '") + key + "'");
  py::handle v = cfg[key];
  if constexpr (std::is_same_v<T, bool>) {
    if (!py::isinstance<py::bool_>(v))
      throw py::type_error(std::string("config field '") + key + "' must be a bool");
  } else if constexpr (std::is_same_v<T, int>) {
    if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v) || v.cast<long>() <= 0 ||
        v.cast<long>() > INT_MAX)
      throw py::value_error(std::string("config field '") + key + "' must be a positive int");
  }
  return v.cast<T>();
}

Dims dims_of(const py::dict& cfg) {
  Dims d{};
  d.image = field<int>(cfg, "image_size");
  d.patch = field<int>(cfg, "patch_size");
  d.chans = field<int>(cfg, "in_chans");
  d.dim = field<int>(cfg, "embed_dim");
  d.depth = field<int>(cfg, "depth");
  d.heads = field<int>(cfg, "num_heads");
  d.mlp = field<int>(cfg, "mlp_dim");
  d.classes = field<int>(cfg, "num_classes");
  d.eps = static_cast<float>(field<double>(cfg, "ln_eps"));
  d.qkv_bias = field<bool>(cfg, "qkv_bias");
  d.norm_pre = field<bool>(cfg, "patch_norm_pre");
  d.norm_post = field<bool>(cfg, "patch_norm_post");
  const std::string gelu = field<std::string>(cfg, "gelu");
  if (gelu != "erf" && gelu != "tanh")
    throw py::value_error("config field 'gelu' must be 'erf' or 'tanh', got '" + gelu + "'");
  d.gelu_tanh = gelu == "tanh";
  if (d.image % d.patch) throw py::value_error("image_size must be a multiple of patch_size");
  if (d.dim % d.heads) throw py::value_error("embed_dim must be divisible by num_heads");
  if (!(d.eps > 0.0f)) throw py::value_error("ln_eps must be positive");
  return d;
}

Precision precision_of(const std::string& p) {
  if (p == "fp32") return Precision::F32;
  if (p == "bf16") return Precision::BF16;
  if (p == "int8") return Precision::INT8;
  throw Unsupported("precision '" + p + "' is not offered; choose fp32, bf16 or int8");
}

struct PyModel {
  Dims dims;
  std::string precision;
  std::unique_ptr<Model> model;

  // config: polyvit.backends._native.config_fields(cfg); weights: name -> float32 array in
  // the shared format's names. Each array's dtype and layout are checked here; its shape where
  // the model takes it by name (model.cpp), which also rejects any tensor left over.
  PyModel(const py::dict& config, const py::dict& weights, const std::string& prec, int threads,
          const std::string& isa, int batch_sizes_kept)
      : dims(dims_of(config)), precision(prec) {
    const Precision p = precision_of(prec);
    if (threads < 1) throw py::value_error("threads must be a positive int");
    if (batch_sizes_kept < 1) throw py::value_error("batch_sizes_kept must be a positive int");
    WeightMap map;
    std::vector<F32> keep;  // the arrays stay referenced while they are packed
    keep.reserve(weights.size());
    for (const auto& [key, value] : weights) {
      if (!py::isinstance<py::str>(key))
        throw py::type_error("weights keys must be str, got " +
                             std::string(py::str(py::type::handle_of(key).attr("__name__"))));
      const std::string name = key.cast<std::string>();
      const py::ssize_t ndim = py::isinstance<py::array>(value)
                                   ? py::reinterpret_borrow<py::array>(value).ndim() : 0;
      keep.push_back(checked(value, "weights['" + name + "']", std::vector<long>(ndim, -1)));
      map.add(name, keep.back().data(), shape_of(keep.back()));
    }
    py::gil_scoped_release nogil;  // packing takes a while; the arrays stay referenced in keep
    model = std::make_unique<Model>(dims, map, p, threads, isa, batch_sizes_kept);
  }

  // images as (B, C, H, W) float32 in place, 1 <= B and small enough for int indices
  F32 checked_images(py::handle images) const {
    F32 x = checked(images, "images", {-1, dims.chans, dims.image, dims.image});
    const long batch = x.shape(0);
    if (batch == 0) throw py::value_error("images is an empty batch (B = 0); pass at least one image");
    const long widest = std::max({3L * dims.dim, static_cast<long>(dims.mlp),
                                  static_cast<long>(dims.patch_dim())});
    if (batch * dims.tokens() * widest >= INT_MAX)
      throw py::value_error("batch of " + std::to_string(batch) +
                            " images is too large for one call: split it into smaller batches");
    return x;
  }

  // every block's attention probabilities, (depth, B, H, T, T)
  py::array_t<float> attention_maps(py::handle images) {
    F32 x = checked_images(images);
    if (precision == "bf16")
      throw py::value_error("attention maps come from the fp32 attention kernel; load the "
                            "model in fp32 or int8 (bf16 attends in bf16 and keeps no map)");
    const long batch = x.shape(0), T = dims.tokens();
    py::array_t<float> maps({static_cast<long>(dims.depth), batch, static_cast<long>(dims.heads),
                             T, T});
    std::vector<float> logits(static_cast<size_t>(batch) * dims.classes);
    const float* in = x.data();
    float* out = maps.mutable_data();
    {
      py::gil_scoped_release nogil;
      model->forward(in, static_cast<int>(batch), logits.data(), nullptr, out);
    }
    return maps;
  }

  py::array_t<float> forward(py::handle images) {
    F32 x = checked_images(images);
    const long batch = x.shape(0);
    py::array_t<float> out({batch, static_cast<long>(dims.classes)});
    const float* in = x.data();
    float* logits = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      model->forward(in, static_cast<int>(batch), logits);
    }
    return out;
  }
};

// Seconds per kind of op, summed over `rounds` forward passes (one warm-up first).
py::dict profile(PyModel& self, py::handle images, int rounds) {
  F32 x = self.checked_images(images);
  if (rounds < 1) throw py::value_error("rounds must be >= 1");
  py::array_t<float> out({static_cast<long>(x.shape(0)), static_cast<long>(self.dims.classes)});
  double seconds[Model::kOps] = {};
  {
    py::gil_scoped_release nogil;
    self.model->forward(x.data(), static_cast<int>(x.shape(0)), out.mutable_data());
    for (int r = 0; r < rounds; ++r)
      self.model->forward(x.data(), static_cast<int>(x.shape(0)), out.mutable_data(), seconds);
  }
  py::dict result;
  for (int op = 0; op < Model::kOps; ++op) result[Model::op_name(op)] = seconds[op] / rounds;
  return result;
}

// ---- single ops for the op-level tests -----------------------------------------------------------
//
// Each op computes as the forward pass does in `precision`: linear and patch_embed with the
// precision's packed weights and converted activations (bf16 operands, or int8 weights per
// output channel and u8 activations per row), fp32 accumulation; attention in bf16 with the
// bf16 kernel of the blocks (bf16 q, k, v and probabilities, fp32 softmax and sums, bf16 out),
// in int8 in fp32 as the model runs it; layernorm and bias_gelu in fp32 in every precision, as
// the model computes them (their bf16 output rounding is the next linear's operand rounding).

Epilogue epilogue_of(const std::string& name) {
  if (name == "none") return Epilogue::Bias;
  if (name == "gelu_erf") return Epilogue::GeluErf;
  if (name == "gelu_tanh") return Epilogue::GeluTanh;
  if (name == "residual") return Epilogue::Residual;
  throw py::value_error("unknown epilogue '" + name + "'; one of none, gelu_erf, gelu_tanh, residual");
}

struct OpRun {
  Precision precision;
  Engine engine;
  int threads;
  OpRun(const std::string& prec, const std::string& isa, int threads_)
      : precision(precision_of(prec)), engine(engine_for(precision, isa)),
        threads(threads_or_default(threads_)) {}
};

py::array_t<float> op_linear(py::handle x_, py::handle w_, py::handle b_,
                             const std::string& epilogue, py::handle r_,
                             const std::string& precision, const std::string& isa, int threads) {
  const Epilogue epi = epilogue_of(epilogue);
  F32 x = checked(x_, "x", {-1, -1});
  check_nonempty(x, "x");
  const long m = x.shape(0), k = x.shape(1);
  F32 w = checked(w_, "weight", {-1, k});
  check_nonempty(w, "weight");
  const long n = w.shape(0);
  F32 b = b_.is_none() ? F32() : checked(b_, "bias", {n});
  F32 r;
  if (epi == Epilogue::Residual) {
    if (r_.is_none()) throw py::value_error("epilogue 'residual' needs residual (M, N)");
    r = checked(r_, "residual", {m, n});
  } else if (!r_.is_none()) {
    throw py::value_error("residual is only used with epilogue 'residual'");
  }
  if (m * (std::max(n, k) + 4) >= INT_MAX) throw py::value_error("x and weight are too large");
  const OpRun run(precision, isa, threads);
  py::array_t<float> out({m, n});
  const float* xp = x.data();
  const float* wp = w.data();
  const float* bp = b_.is_none() ? nullptr : b.data();
  const float* rp = r_.is_none() ? nullptr : r.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    const Linear l = pack_linear(wp, bp, static_cast<int>(n), static_cast<int>(k), run.precision,
                                 run.engine.nr(run.precision));
    OperandBuffers buffers;
    const Operand op = buffers.reserve(run.engine, m, l.kp);
    parallel(run.threads, [&](Team t) {
      linear(run.engine, l, xp, k, static_cast<int>(m), y, n, epi, rp, n, op, t);
    });
  }
  return out;
}

py::array_t<float> op_layernorm(py::handle x_, py::handle w_, py::handle b_, double eps,
                                const std::string& precision, const std::string& isa,
                                int threads) {
  F32 x = checked(x_, "x", {-1, -1});
  check_nonempty(x, "x");
  const long m = x.shape(0), c = x.shape(1);
  F32 w = checked(w_, "weight", {c}), b = checked(b_, "bias", {c});
  if (!(eps > 0)) throw py::value_error("eps must be positive");
  const OpRun run(precision, isa, threads);
  py::array_t<float> out({m, c});
  const float *xp = x.data(), *wp = w.data(), *bp = b.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    parallel(run.threads, [&](Team t) {
      layernorm(*run.engine.f32, xp, c, y, c, static_cast<int>(m), static_cast<int>(c), wp, bp,
                static_cast<float>(eps), t);
    });
  }
  return out;
}

py::array_t<float> op_attention(py::handle qkv_, int heads, const std::string& precision,
                                const std::string& isa, int threads) {
  F32 qkv = checked(qkv_, "qkv", {-1, -1, -1});
  check_nonempty(qkv, "qkv");
  const long batch = qkv.shape(0), tokens = qkv.shape(1), three_d = qkv.shape(2);
  if (three_d % 3) throw py::value_error("qkv's last axis must be 3 * D (q, k and v)");
  const long dim = three_d / 3;
  if (heads <= 0 || dim % heads)
    throw py::value_error("num_heads must be positive and divide D = " + std::to_string(dim));
  if (batch * (tokens + 16) * three_d >= INT_MAX) throw py::value_error("qkv is too large");
  const OpRun run(precision, isa, threads);
  const int tp = attention_tp(static_cast<int>(tokens)), hd = static_cast<int>(dim / heads);
  py::array_t<float> out({batch, tokens, dim});
  const float* in = qkv.data();
  float* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    Attention at{in, o, nullptr, static_cast<int>(batch), static_cast<int>(tokens),
                 static_cast<int>(dim), heads, tp, static_cast<int>(tokens)};
    if (run.engine.bf16) {
      const long hdp = (hd + 1) / 2 * 2;
      Buffer<uint16_t> kt16(batch * heads * hdp * tp), v16(batch * heads * hdp * tp);
      Buffer<uint16_t> out16(batch * tokens * dim);  // (B * T, D)
      at.out = nullptr;
      at.kt16 = kt16.data();
      at.v16 = v16.data();
      at.out16 = out16.data();
      at.ldo16 = dim;
      const KernelsBf16& k = *run.engine.bf16;
      const long stride = attention_scratch(k.attention_block, tp, hd);
      Buffer<float> scratch(run.threads * stride);
      parallel(run.threads, [&](Team t) { attention_bf16(k, at, scratch.data(), stride, t); });
      for (long i = 0; i < batch * tokens * dim; ++i) {  // bf16 widens to fp32 exactly
        const uint32_t bits = static_cast<uint32_t>(out16.data()[i]) << 16;
        std::memcpy(o + i, &bits, sizeof bits);
      }
    } else {
      const Kernels& k = *run.engine.f32;
      Buffer<float> kt(batch * dim * tp);
      at.kt = kt.data();
      const long stride = attention_scratch(k.attention_block, tp, hd);
      Buffer<float> scratch(run.threads * stride);
      parallel(run.threads, [&](Team t) { attention(k, at, scratch.data(), stride, t); });
    }
  }
  return out;
}

py::array_t<float> op_bias_gelu(py::handle x_, py::handle b_, const std::string& form,
                                const std::string& precision, const std::string& isa,
                                int threads) {
  if (form != "erf" && form != "tanh") throw py::value_error("form must be 'erf' or 'tanh'");
  F32 x = checked(x_, "x", {-1, -1});
  check_nonempty(x, "x");
  const long m = x.shape(0), n = x.shape(1);
  F32 b = checked(b_, "bias", {n});
  const OpRun run(precision, isa, threads);
  py::array_t<float> out({m, n});
  const float *xp = x.data(), *bp = b.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    const Kernels& k = *run.engine.f32;
    parallel(run.threads, [&](Team t) {
      long r0, r1;
      t.split(m, &r0, &r1);
      if (r0 < r1) k.bias_gelu(xp + r0 * n, y + r0 * n, n, static_cast<int>(r1 - r0),
                               static_cast<int>(n), bp, form == "tanh");
    });
  }
  return out;
}

// images (B, C, H, W), weight (D, C, P, P), bias (D,) -> (B, H/P * W/P, D), the model's path
// without the patch norms.
py::array_t<float> op_patch_embed(py::handle images_, py::handle w_, py::handle b_,
                                  const std::string& precision, const std::string& isa,
                                  int threads) {
  F32 images = checked(images_, "images", {-1, -1, -1, -1});
  check_nonempty(images, "images");
  const long batch = images.shape(0), chans = images.shape(1), height = images.shape(2),
             width = images.shape(3);
  F32 w = checked(w_, "weight", {-1, chans, -1, -1});
  check_nonempty(w, "weight");
  const long dim = w.shape(0), patch = w.shape(2);
  if (w.shape(3) != patch || height % patch || width % patch)
    throw py::value_error("weight has shape " + shape_str(shape_of(w)) + " and images " +
                          shape_str(shape_of(images)) + ": patches must be square and tile "
                          "the images");
  F32 b = checked(b_, "bias", {dim});
  const long n = (height / patch) * (width / patch), cols = chans * patch * patch;
  if (batch * n * (std::max(cols, dim) + 4) >= INT_MAX)
    throw py::value_error("images are too many for one call: split the batch");
  const OpRun run(precision, isa, threads);
  py::array_t<float> out({batch, n, dim});
  const float *ip = images.data(), *wp = w.data(), *bp = b.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    // (D, C, P, P) is already (D, C*P*P) in im2col's (c, py, px) order
    const Linear proj = pack_linear(wp, bp, static_cast<int>(dim), static_cast<int>(cols),
                                    run.precision, run.engine.nr(run.precision));
    Buffer<float> patches(batch * n * cols);
    OperandBuffers buffers;
    const Operand op = buffers.reserve(run.engine, batch * n, proj.kp);
    const PatchEmbed pe{ip, static_cast<int>(batch), static_cast<int>(chans),
                        static_cast<int>(height), static_cast<int>(width),
                        static_cast<int>(patch), nullptr, nullptr, 0.0f, patches.data(), y};
    parallel(run.threads, [&](Team t) { patch_embed(run.engine, proj, pe, op, t); });
  }
  return out;
}

// A packed linear layer for the GEMM benchmark: weights packed once, then x (M, K) -> (M, N)
// per call.
struct PyLinear {
  Engine engine;
  Linear layer;
  int threads;
  std::string precision;
  std::mutex mutex;  // the operand scratch below is reused across calls
  OperandBuffers operand;

  PyLinear(py::handle w_, py::handle b_, const std::string& prec, const std::string& isa,
           int threads_)
      : threads(threads_or_default(threads_)), precision(prec) {
    F32 w = checked(w_, "weight", {-1, -1});
    check_nonempty(w, "weight");
    const long n = w.shape(0), k = w.shape(1);
    F32 b = b_.is_none() ? F32() : checked(b_, "bias", {n});
    const Precision p = precision_of(prec);
    engine = engine_for(p, isa);
    layer = pack_linear(w.data(), b_.is_none() ? nullptr : b.data(), static_cast<int>(n),
                        static_cast<int>(k), p, engine.nr(p));
  }

  py::array_t<float> call(py::handle x_, const std::string& epilogue, py::handle r_,
                          py::handle out_) {
    const Epilogue epi = epilogue_of(epilogue);
    F32 x = checked(x_, "x", {-1, layer.k});
    check_nonempty(x, "x");
    const long m = x.shape(0), n = layer.n;
    if (m * std::max<long>(layer.kp, n) >= INT_MAX) throw py::value_error("x is too large");
    F32 r = epi == Epilogue::Residual ? checked(r_, "residual", {m, n}) : F32();
    py::array_t<float> out = out_.is_none() ? py::array_t<float>({m, n})
                                            : py::array_t<float>(checked(out_, "out", {m, n}));
    const float* xp = x.data();
    const float* rp = epi == Epilogue::Residual ? r.data() : nullptr;
    float* y = out.mutable_data();
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mutex);
    const Operand op = operand.reserve(engine, m, layer.kp);
    parallel(threads, [&](Team t) {
      linear(engine, layer, xp, layer.k, static_cast<int>(m), y, n, epi, rp, n, op, t);
    });
    return out;
  }
};

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "polyvit's C++ CPU backend: a ViT forward pass with hand-written SIMD kernels";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Unsupported& e) {
      py::object cls = py::module_::import("polyvit.errors").attr("BackendError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  m.def("cpu_has", [](const std::string& f) { return cpu_has(f.c_str()); },
        "Whether this CPU has a feature: avx2, avx512, avx512_bf16, avx512_vnni.");
  m.def("isas", [] { return std::string(cpu_isas()); },
        "The kernel sets this CPU runs, best first, space separated.");
  m.def("max_threads", [] { return omp_get_max_threads(); },
        "OpenMP's default thread count (OMP_NUM_THREADS, else the cores).");

  py::class_<PyModel>(m, "Model")
      .def(py::init<const py::dict&, const py::dict&, const std::string&, int, const std::string&,
                    int>(),
           py::arg("config"), py::arg("weights"), py::arg("precision"), py::arg("threads"),
           py::arg("isa"), py::arg("batch_sizes_kept"),
           "config: _native.config_fields(cfg); weights: name -> float32 array")
      .def("forward", &PyModel::forward, py::arg("images"),
           "(B, C, H, W) float32 C-contiguous -> (B, num_classes) float32 logits")
      .def("attention_maps", &PyModel::attention_maps, py::arg("images"),
           "(B, C, H, W) float32 -> every block's attention probabilities (depth, B, H, T, T)")
      .def("profile", &profile, py::arg("images"), py::arg("rounds") = 10,
           "seconds per kind of op of one forward pass, averaged over rounds")
      .def("cached_batch_sizes", [](PyModel& s) { return s.model->cached_batch_sizes(); },
           "the batch sizes whose workspaces are kept, least recently used first")
      .def("clear_cache", [](PyModel& s) { s.model->clear_cache(); },
           "drop every kept workspace")
      .def_property_readonly("threads", [](const PyModel& s) { return s.model->threads(); })
      .def_property_readonly("isa", [](const PyModel& s) { return std::string(s.model->isa()); })
      .def_property_readonly(
          "int8_isa",
          [](const PyModel& s) -> py::object {
            const char* isa = s.model->int8_isa();
            return isa ? py::object(py::str(isa)) : py::object(py::none());
          },
          "the int8 kernels (avx512_vnni, avx2 or generic) of an int8 model, else None")
      .def_readonly("precision", &PyModel::precision);

  py::class_<PyLinear>(m, "Linear")
      .def(py::init<py::handle, py::handle, const std::string&, const std::string&, int>(),
           py::arg("weight"), py::arg("bias"), py::arg("precision") = "fp32",
           py::arg("isa") = "auto", py::arg("threads") = 0)
      .def("__call__", &PyLinear::call, py::arg("x"), py::arg("epilogue") = "none",
           py::arg("residual") = py::none(), py::arg("out") = py::none(),
           "x (M, K) -> epilogue(x @ weight.T + bias) (M, N), into out when given")
      .def_readonly("precision", &PyLinear::precision);

  // The single ops; precision, isa and threads (0: OpenMP's default) by keyword.
  m.def("linear", &op_linear, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("epilogue") = "none", py::arg("residual") = py::none(), py::kw_only(),
        py::arg("precision") = "fp32", py::arg("isa") = "auto", py::arg("threads") = 0);
  m.def("layernorm", &op_layernorm, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::kw_only(), py::arg("precision") = "fp32", py::arg("isa") = "auto",
        py::arg("threads") = 0);
  m.def("attention", &op_attention, py::arg("qkv"), py::arg("num_heads"), py::kw_only(),
        py::arg("precision") = "fp32", py::arg("isa") = "auto", py::arg("threads") = 0);
  m.def("bias_gelu", &op_bias_gelu, py::arg("x"), py::arg("bias"), py::arg("form") = "erf",
        py::kw_only(), py::arg("precision") = "fp32", py::arg("isa") = "auto",
        py::arg("threads") = 0);
  m.def("patch_embed", &op_patch_embed, py::arg("images"), py::arg("weight"), py::arg("bias"),
        py::kw_only(), py::arg("precision") = "fp32", py::arg("isa") = "auto",
        py::arg("threads") = 0);
}
