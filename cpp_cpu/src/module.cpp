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
#include <mutex>
#include <string>
#include <vector>

#include "model.h"
#include "ops.h"

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

int threads_or_default(int threads) {
  if (threads < 0) throw py::value_error("threads must be positive (or 0 for OMP_NUM_THREADS)");
  return threads > 0 ? threads : omp_get_max_threads();
}

const Kernels& kernels(const std::string& isa) {
  const char* why = nullptr;
  const Kernels* k = kernels_for(isa.c_str(), &why);
  if (!k) throw Unsupported("isa '" + isa + "': " + why);
  return *k;
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

  PyModel(const py::dict& config, const py::dict& weights, const std::string& prec, int threads,
          const std::string& isa)
      : dims(dims_of(config)), precision(prec) {
    const Precision p = precision_of(prec);
    WeightMap map;
    std::vector<F32> keep;  // the arrays stay referenced while they are packed
    const auto shapes = expected_shapes(dims);
    for (const auto& [name, shape] : shapes) {
      if (!weights.contains(name.c_str()))
        throw py::value_error("weights has no tensor '" + name + "' (shape " + shape_str(shape) +
                              ") for this config");
      keep.push_back(checked(weights[name.c_str()], "weights['" + name + "']", shape));
      map[name] = keep.back().data();
    }
    if (weights.size() != shapes.size())
      throw py::value_error("weights has " + std::to_string(weights.size()) +
                            " tensors, the config needs " + std::to_string(shapes.size()) +
                            ": remove the ones it does not name");
    const int nt = threads_or_default(threads);
    py::gil_scoped_release nogil;  // packing takes a while; the arrays stay referenced in keep
    model = std::make_unique<Model>(dims, map, p, nt, isa);
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

Epilogue epilogue_of(const std::string& name) {
  if (name == "none") return Epilogue::Bias;
  if (name == "gelu_erf") return Epilogue::GeluErf;
  if (name == "gelu_tanh") return Epilogue::GeluTanh;
  if (name == "residual") return Epilogue::Residual;
  throw py::value_error("unknown epilogue '" + name + "'; one of none, gelu_erf, gelu_tanh, residual");
}

py::array_t<float> op_linear(py::handle x_, py::handle w_, py::handle b_,
                             const std::string& epilogue, py::handle r_, const std::string& isa,
                             int threads) {
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
  if (m * std::max(n, k) >= INT_MAX) throw py::value_error("x and weight are too large");
  const Kernels& kern = kernels(isa);
  const int nt = threads_or_default(threads);
  py::array_t<float> out({m, n});
  {
    const float* xp = x.data();
    const float* wp = w.data();
    const float* bp = b_.is_none() ? nullptr : b.data();
    const float* rp = r_.is_none() ? nullptr : r.data();
    float* y = out.mutable_data();
    py::gil_scoped_release nogil;
    const Linear l = pack_linear(wp, bp, static_cast<int>(n), static_cast<int>(k), Precision::F32,
                                 kern.nr);
    const GemmF32 g{xp, k, l.w32.data(), l.bias.data(), y, n, rp, n, static_cast<int>(m),
                    static_cast<int>(n), static_cast<int>(k), epi};
    parallel(nt, [&](Team t) { gemm_f32(kern, g, t); });
  }
  return out;
}

py::array_t<float> op_layernorm(py::handle x_, py::handle w_, py::handle b_, double eps,
                                const std::string& isa, int threads) {
  F32 x = checked(x_, "x", {-1, -1});
  check_nonempty(x, "x");
  const long m = x.shape(0), c = x.shape(1);
  F32 w = checked(w_, "weight", {c}), b = checked(b_, "bias", {c});
  if (!(eps > 0)) throw py::value_error("eps must be positive");
  const Kernels& kern = kernels(isa);
  const int nt = threads_or_default(threads);
  py::array_t<float> out({m, c});
  const float *xp = x.data(), *wp = w.data(), *bp = b.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    parallel(nt, [&](Team t) {
      layernorm(kern, xp, c, y, c, static_cast<int>(m), static_cast<int>(c), wp, bp,
                static_cast<float>(eps), t);
    });
  }
  return out;
}

py::array_t<float> op_attention(py::handle qkv_, int heads, const std::string& isa,
                                int threads) {
  F32 qkv = checked(qkv_, "qkv", {-1, -1, -1});
  check_nonempty(qkv, "qkv");
  const long batch = qkv.shape(0), tokens = qkv.shape(1), three_d = qkv.shape(2);
  if (three_d % 3) throw py::value_error("qkv's last axis must be 3 * D (q, k and v)");
  const long dim = three_d / 3;
  if (heads <= 0 || dim % heads)
    throw py::value_error("num_heads must be positive and divide D = " + std::to_string(dim));
  if (batch * tokens * three_d >= INT_MAX) throw py::value_error("qkv is too large");
  const Kernels& kern = kernels(isa);
  const int nt = threads_or_default(threads);
  const int tp = attention_tp(static_cast<int>(tokens));
  py::array_t<float> out({batch, tokens, dim});
  const float* in = qkv.data();
  float* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    Buffer<float> kt(batch * dim * tp);
    const long stride = attention_scratch(kern.attention_block, tp, static_cast<int>(dim / heads));
    Buffer<float> scratch(nt * stride);
    const Attention at{in, o, kt.data(), static_cast<int>(batch), static_cast<int>(tokens),
                       static_cast<int>(dim), heads, tp, static_cast<int>(tokens)};
    parallel(nt, [&](Team t) { attention(kern, at, scratch.data(), stride, t); });
  }
  return out;
}

py::array_t<float> op_bias_gelu(py::handle x_, py::handle b_, const std::string& form,
                                const std::string& isa, int threads) {
  if (form != "erf" && form != "tanh") throw py::value_error("form must be 'erf' or 'tanh'");
  F32 x = checked(x_, "x", {-1, -1});
  check_nonempty(x, "x");
  const long m = x.shape(0), n = x.shape(1);
  F32 b = checked(b_, "bias", {n});
  const Kernels& kern = kernels(isa);
  const int nt = threads_or_default(threads);
  py::array_t<float> out({m, n});
  const float *xp = x.data(), *bp = b.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    parallel(nt, [&](Team t) {
      long r0, r1;
      t.split(m, &r0, &r1);
      if (r0 < r1) kern.bias_gelu(xp + r0 * n, y + r0 * n, n, static_cast<int>(r1 - r0),
                                  static_cast<int>(n), bp, form == "tanh");
    });
  }
  return out;
}

// A packed linear layer for the GEMM benchmark and the reduced-precision op tests: weights
// packed once, then x (M, K) -> (M, N) per call.
struct PyLinear {
  Engine engine;
  Linear layer;
  int threads;
  std::string precision;
  std::mutex mutex;  // the operand scratch below is reused across calls
  Buffer<uint16_t> a16;
  Buffer<uint8_t> a8;
  Buffer<float> scale;
  Buffer<int32_t> zero;

  PyLinear(py::handle w_, py::handle b_, const std::string& prec, const std::string& isa,
           int threads_)
      : threads(threads_or_default(threads_)), precision(prec) {
    F32 w = checked(w_, "weight", {-1, -1});
    check_nonempty(w, "weight");
    const long n = w.shape(0), k = w.shape(1);
    F32 b = b_.is_none() ? F32() : checked(b_, "bias", {n});
    const char* why = nullptr;
    engine.f32 = &kernels(isa);
    const Precision p = precision_of(prec);
    if (p == Precision::BF16 && !(engine.bf16 = kernels_bf16(&why))) throw Unsupported(why);
    if (p == Precision::INT8 && !(engine.int8 = kernels_int8(&why))) throw Unsupported(why);
    const int nr = p == Precision::F32 ? engine.f32->nr
                   : p == Precision::BF16 ? engine.bf16->nr : engine.int8->nr;
    layer = pack_linear(w.data(), b_.is_none() ? nullptr : b.data(), static_cast<int>(n),
                        static_cast<int>(k), p, nr);
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
    if (engine.bf16) a16.reserve(m * layer.kp);
    if (engine.int8) {
      a8.reserve(m * layer.kp);
      scale.reserve(m);
      zero.reserve(m);
    }
    const Operand op{a16.data(), a8.data(), scale.data(), zero.data()};
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
        "The default thread count (OMP_NUM_THREADS, else the cores).");

  py::class_<PyModel>(m, "Model")
      .def(py::init<const py::dict&, const py::dict&, const std::string&, int, const std::string&>(),
           py::arg("config"), py::arg("weights"), py::arg("precision") = "fp32",
           py::arg("threads") = 0, py::arg("isa") = "auto")
      .def("forward", &PyModel::forward, py::arg("images"),
           "(B, C, H, W) float32 C-contiguous -> (B, num_classes) float32 logits")
      .def("profile", &profile, py::arg("images"), py::arg("rounds") = 10,
           "seconds per kind of op of one forward pass, averaged over rounds")
      .def_property_readonly("threads", [](const PyModel& s) { return s.model->threads(); })
      .def_property_readonly("isa", [](const PyModel& s) { return std::string(s.model->isa()); })
      .def_readonly("precision", &PyModel::precision);

  py::class_<PyLinear>(m, "Linear")
      .def(py::init<py::handle, py::handle, const std::string&, const std::string&, int>(),
           py::arg("weight"), py::arg("bias"), py::arg("precision") = "fp32",
           py::arg("isa") = "auto", py::arg("threads") = 0)
      .def("__call__", &PyLinear::call, py::arg("x"), py::arg("epilogue") = "none",
           py::arg("residual") = py::none(), py::arg("out") = py::none(),
           "x (M, K) -> epilogue(x @ weight.T + bias) (M, N), into out when given")
      .def_readonly("precision", &PyLinear::precision);

  m.def("linear", &op_linear, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("epilogue") = "none", py::arg("residual") = py::none(), py::arg("isa") = "auto",
        py::arg("threads") = 0);
  m.def("layernorm", &op_layernorm, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("isa") = "auto", py::arg("threads") = 0);
  m.def("attention", &op_attention, py::arg("qkv"), py::arg("num_heads"), py::arg("isa") = "auto",
        py::arg("threads") = 0);
  m.def("bias_gelu", &op_bias_gelu, py::arg("x"), py::arg("bias"), py::arg("form") = "erf",
        py::arg("isa") = "auto", py::arg("threads") = 0);
}
