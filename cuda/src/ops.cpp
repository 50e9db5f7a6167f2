// The single ops on numpy arrays (float32 in and out) for the op-level parity harness, and a
// timer of the same kernels on device-resident data for the kernel benchmarks. Every argument
// is checked here, before the device is touched.
#include "ops.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <type_traits>

#include "attention.cuh"
#include "bias_gelu.cuh"
#include "cast.cuh"
#include "device.h"
#include "layernorm.cuh"
#include "linear_fp32.cuh"
#include "linear_tc.cuh"
#include "patch_embed.cuh"

namespace polyvit_cuda {

// ---- host-side checks --------------------------------------------------------------------------------

py::array host_float32(py::handle obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected float32; pass " + name + ".astype(np.float32)");
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " is not C-contiguous; pass np.ascontiguousarray(" + name + ")");
  return a;
}

static void require_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape.begin()[i];
  if (!ok) {
    std::string want = "(", got = "(";
    for (py::ssize_t d : shape) want += std::to_string(d) + ", ";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) got += std::to_string(a.shape(i)) + ", ";
    throw py::value_error(std::string(name) + " has shape " + got + "), expected " + want + ")");
  }
}

static int positive_int(py::ssize_t v, const char* what) {
  if (v <= 0 || v > (1LL << 31) - 1)
    throw py::value_error(std::string(what) + " must be between 1 and 2^31 - 1, got " + std::to_string(v));
  return static_cast<int>(v);
}

static Epilogue parse_epilogue(const std::string& name) {
  if (name == "none") return Epilogue::kNone;
  if (name == "gelu_erf") return Epilogue::kGeluErf;
  if (name == "gelu_tanh") return Epilogue::kGeluTanh;
  if (name == "residual") return Epilogue::kResidual;
  throw py::value_error("unknown epilogue '" + name + "'; one of none, gelu_erf, gelu_tanh, residual");
}

static void check_precision(const std::string& precision) {
  if (precision != "fp32" && precision != "bf16" && precision != "fp16")
    throw py::value_error("precision must be fp32, bf16 or fp16, got '" + precision + "'");
}

// ---- device plumbing ---------------------------------------------------------------------------------

namespace {

// Raw views of numpy arrays, taken while the GIL is held: the device work runs without it.
struct In {
  const float* data = nullptr;
  size_t n = 0;
};
struct Out {
  float* data;
  size_t n;
};
In view(const py::array& a) { return {static_cast<const float*>(a.data()), static_cast<size_t>(a.size())}; }
In view(const std::optional<py::array>& a) { return a ? view(*a) : In{}; }
Out view(py::array_t<float>& a) { return {a.mutable_data(), static_cast<size_t>(a.size())}; }

// One op call: its device, current for the call and the caller's again after it; its own
// stream, synchronised before results are read. Its buffers are stream-ordered on that stream
// (cudaMallocAsync / cudaFreeAsync), so a call never waits for the rest of the device, and a
// buffer may go as soon as the work that reads it is enqueued. Declare buffers after the Call:
// they are freed on its stream.
struct Call {
  explicit Call(int index) : scope(index) {}
  DeviceScope scope;  // first: "no CUDA device: ..." before anything, and the stream lives on it
  Stream stream;

  DeviceBuffer buffer(size_t bytes) { return DeviceBuffer::stream_ordered(bytes, stream.get(), stream.get()); }
  // Host memory onto the device, ordered on the call's stream like everything that reads it.
  DeviceBuffer upload(In a) {
    DeviceBuffer d = buffer(a.n * sizeof(float));
    if (a.n) CUDA_CHECK(cudaMemcpyAsync(d.as<void>(), a.data, a.n * sizeof(float), cudaMemcpyHostToDevice, stream.get()));
    return d;
  }
  // The array rounded to T on the device (a plain copy for float).
  template <class T>
  DeviceBuffer upload_as(In a) {
    DeviceBuffer f = upload(a);
    if constexpr (std::is_same_v<T, float>) {
      return f;
    } else {
      DeviceBuffer t = buffer(a.n * sizeof(T));
      cast<float, T>(f.as<float>(), t.as<T>(), a.n, stream.get());
      return t;  // f's free is ordered after the cast
    }
  }
  // d (out.n elements of T) into out as float; synchronised.
  template <class T>
  void download(const DeviceBuffer& d, Out out) {
    const float* src = d.as<float>();
    DeviceBuffer widened;
    if constexpr (!std::is_same_v<T, float>) {
      widened = buffer(out.n * sizeof(float));
      cast<T, float>(d.as<T>(), widened.as<float>(), out.n, stream.get());
      src = widened.as<float>();
    }
    CUDA_CHECK(cudaMemcpyAsync(out.data, src, out.n * sizeof(float), cudaMemcpyDeviceToHost, stream.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  }
};

// Runs fn<float>, fn<bf16> or fn<fp16> by name.
template <class F>
void by_precision(const std::string& precision, F&& fn) {
  if (precision == "fp32") fn(float{});
  else if (precision == "bf16") fn(bf16{});
  else fn(fp16{});
}

}  // namespace

// ---- the ops -----------------------------------------------------------------------------------------

static py::array_t<float> linear(py::handle x_obj, py::handle w_obj, py::handle b_obj,
                                 const std::string& epilogue_name, py::handle r_obj,
                                 const std::string& precision, int device) {
  const py::array x = host_float32(x_obj, "x"), w = host_float32(w_obj, "weight");
  if (x.ndim() != 2 || w.ndim() != 2) throw py::value_error("linear: x must be (M, K) and weight (N, K)");
  const int M = positive_int(x.shape(0), "M"), K = positive_int(x.shape(1), "K");
  const int N = positive_int(w.shape(0), "N");
  require_shape(w, "weight", {N, K});
  const Epilogue epilogue = parse_epilogue(epilogue_name);
  check_precision(precision);
  std::optional<py::array> b, r;
  if (!b_obj.is_none()) {
    b = host_float32(b_obj, "bias");
    require_shape(*b, "bias", {N});
  }
  if (epilogue == Epilogue::kResidual) {
    if (r_obj.is_none()) throw py::value_error("linear: epilogue 'residual' needs residual (M, N)");
    r = host_float32(r_obj, "residual");
    require_shape(*r, "residual", {M, N});
  } else if (!r_obj.is_none()) {
    throw py::value_error("linear: residual is only read by epilogue 'residual'");
  }
  py::array_t<float> out({M, N});
  const In vx = view(x), vw = view(w), vb = view(b), vr = view(r);
  const Out vo = view(out);
  py::gil_scoped_release nogil;
  Call call(device);
  const DeviceBuffer db = vb.data ? call.upload(vb) : DeviceBuffer();
  const DeviceBuffer dr = vr.data ? call.upload(vr) : DeviceBuffer();
  DeviceBuffer dy = call.buffer(static_cast<size_t>(M) * N * sizeof(float));
  by_precision(precision, [&](auto tag) {
    using T = decltype(tag);
    const DeviceBuffer dx = call.upload_as<T>(vx), dw = call.upload_as<T>(vw);
    if constexpr (std::is_same_v<T, float>)
      linear_fp32(dx.as<float>(), dw.as<float>(), db.as<float>(), dr.as<float>(), dy.as<float>(), M,
                  N, K, epilogue, call.stream.get());
    else
      linear_tc<T, float>(dx.as<T>(), dw.as<T>(), db.as<float>(), dr.as<float>(), dy.as<float>(), M,
                          N, K, epilogue, call.stream.get());
    call.download<float>(dy, vo);
  });
  return out;
}

static py::array_t<float> layernorm_op(py::handle x_obj, py::handle w_obj, py::handle b_obj,
                                       double eps, const std::string& precision, int device) {
  const py::array x = host_float32(x_obj, "x"), w = host_float32(w_obj, "weight"),
                  b = host_float32(b_obj, "bias");
  if (x.ndim() != 2) throw py::value_error("layernorm: x must be (M, C)");
  const int M = positive_int(x.shape(0), "M"), C = positive_int(x.shape(1), "C");
  require_shape(w, "weight", {C});
  require_shape(b, "bias", {C});
  if (!(eps > 0)) throw py::value_error("layernorm: eps must be positive");
  check_precision(precision);
  py::array_t<float> out({M, C});
  const In vx = view(x), vw = view(w), vb = view(b);
  const Out vo = view(out);
  py::gil_scoped_release nogil;
  Call call(device);
  const DeviceBuffer dx = call.upload(vx), dw = call.upload(vw), db = call.upload(vb);
  by_precision(precision, [&](auto tag) {
    using T = decltype(tag);
    DeviceBuffer dy = call.buffer(static_cast<size_t>(M) * C * sizeof(T));
    layernorm<float, T>(dx.as<float>(), C, dw.as<float>(), db.as<float>(), dy.as<T>(), M, C,
                        static_cast<float>(eps), call.stream.get());
    call.download<T>(dy, vo);
  });
  return out;
}

// queries: None (every token's) or 1 (the class token's alone: the last block's kernel path).
static py::array_t<float> attention_op(py::handle qkv_obj, int heads, const std::string& precision,
                                       py::handle queries_obj, int device) {
  const py::array qkv = host_float32(qkv_obj, "qkv");
  if (qkv.ndim() != 3 || qkv.shape(2) % 3 != 0)
    throw py::value_error("attention: qkv must be (B, T, 3D)");
  const int B = positive_int(qkv.shape(0), "B"), tokens = positive_int(qkv.shape(1), "T");
  const int D = positive_int(qkv.shape(2) / 3, "D");
  if (heads <= 0 || D % heads != 0)
    throw py::value_error("attention: D = " + std::to_string(D) + " is not divisible by " +
                          std::to_string(heads) + " heads");
  if (B > 65535) throw py::value_error("attention: B must be at most 65535");
  check_precision(precision);
  const bool class_query = !queries_obj.is_none();
  if (class_query && queries_obj.cast<long long>() != 1)
    throw py::value_error("attention: queries must be None (all T) or 1 (the class token's)");
  const int Q = class_query ? 1 : tokens;
  py::array_t<float> out({B, Q, D});
  const In vq = view(qkv);
  const Out vo = view(out);
  py::gil_scoped_release nogil;
  // The class query's layout, as the last block has it: q (B, D) of token 0, k | v (B, T, 2D).
  std::vector<float> q_cls, kv;
  if (class_query) {
    for (size_t b = 0; b < static_cast<size_t>(B); ++b) {
      const float* image = vq.data + b * tokens * 3 * D;
      q_cls.insert(q_cls.end(), image, image + D);
      for (size_t t = 0; t < static_cast<size_t>(tokens); ++t)
        kv.insert(kv.end(), image + t * 3 * D + D, image + (t + 1) * 3 * D);
    }
  }
  Call call(device);
  by_precision(precision, [&](auto tag) {
    using T = decltype(tag);
    DeviceBuffer dy = call.buffer(static_cast<size_t>(B) * Q * D * sizeof(T));
    if (class_query) {
      const DeviceBuffer dq = call.upload_as<T>({q_cls.data(), q_cls.size()});
      const DeviceBuffer dkv = call.upload_as<T>({kv.data(), kv.size()});
      attention_class_query<T>(dq.as<T>(), dkv.as<T>(), dy.as<T>(), B, tokens, D, heads, call.stream.get());
    } else {
      const DeviceBuffer dq = call.upload_as<T>(vq);
      attention<T>(dq.as<T>(), dy.as<T>(), B, tokens, D, heads, call.stream.get());
    }
    call.download<T>(dy, vo);
  });
  return out;
}

// images (B, C, H, W), weight (D, C, P, P), bias (D,) or None -> (B, N, D): the gather, then the
// linear with the weight as (D, C * P * P), in the precision's linear (fp32 output).
static py::array_t<float> patch_embed_op(py::handle images_obj, py::handle w_obj, py::handle b_obj,
                                         const std::string& precision, int device) {
  const py::array images = host_float32(images_obj, "images"), w = host_float32(w_obj, "weight");
  if (images.ndim() != 4 || w.ndim() != 4)
    throw py::value_error("patch_embed: images must be (B, C, H, W) and weight (D, C, P, P)");
  const int B = positive_int(images.shape(0), "B"), C = positive_int(images.shape(1), "C");
  const int H = positive_int(images.shape(2), "H"), W = positive_int(images.shape(3), "W");
  const int D = positive_int(w.shape(0), "D"), P = positive_int(w.shape(2), "P");
  require_shape(w, "weight", {D, C, P, P});
  if (H % P != 0 || W % P != 0)
    throw py::value_error("patch_embed: " + std::to_string(P) + "x" + std::to_string(P) +
                          " patches do not tile " + std::to_string(H) + "x" + std::to_string(W) + " images");
  check_precision(precision);
  std::optional<py::array> b;
  if (!b_obj.is_none()) {
    b = host_float32(b_obj, "bias");
    require_shape(*b, "bias", {D});
  }
  const int N = (H / P) * (W / P), PD = C * P * P;
  if (static_cast<long long>(B) * N > (1LL << 31) - 1)
    throw py::value_error("patch_embed: B * N must be below 2^31");
  py::array_t<float> out({B, N, D});
  const In vi = view(images), vw = view(w), vb = view(b);
  const Out vo = view(out);
  py::gil_scoped_release nogil;
  Call call(device);
  const DeviceBuffer di = call.upload(vi);
  const DeviceBuffer db = vb.data ? call.upload(vb) : DeviceBuffer();
  DeviceBuffer dy = call.buffer(static_cast<size_t>(B) * N * D * sizeof(float));
  by_precision(precision, [&](auto tag) {
    using T = decltype(tag);
    const DeviceBuffer dw = call.upload_as<T>(vw);
    DeviceBuffer patches = call.buffer(static_cast<size_t>(B) * N * PD * sizeof(T));  // (B * N, PD)
    patch_embed_gather<T>(di.as<float>(), patches.as<T>(), B, C, H, W, P, call.stream.get());
    if constexpr (std::is_same_v<T, float>)
      linear_fp32(patches.as<float>(), dw.as<float>(), db.as<float>(), nullptr, dy.as<float>(), B * N, D,
                  PD, Epilogue::kNone, call.stream.get());
    else
      linear_tc<T, float>(patches.as<T>(), dw.as<T>(), db.as<float>(), nullptr, dy.as<float>(), B * N, D,
                          PD, Epilogue::kNone, call.stream.get());
    call.download<float>(dy, vo);
  });
  return out;
}

static py::array_t<float> bias_gelu_op(py::handle x_obj, py::handle b_obj, const std::string& form,
                                       int device) {
  const py::array x = host_float32(x_obj, "x");
  if (x.ndim() != 2) throw py::value_error("bias_gelu: x must be (M, N)");
  const int M = positive_int(x.shape(0), "M"), N = positive_int(x.shape(1), "N");
  std::optional<py::array> b;
  if (!b_obj.is_none()) {
    b = host_float32(b_obj, "bias");
    require_shape(*b, "bias", {N});
  }
  if (form != "erf" && form != "tanh") throw py::value_error("bias_gelu: form must be 'erf' or 'tanh'");
  py::array_t<float> out({M, N});
  const In vx = view(x), vb = view(b);
  const Out vo = view(out);
  py::gil_scoped_release nogil;
  Call call(device);
  const DeviceBuffer dx = call.upload(vx), db = vb.data ? call.upload(vb) : DeviceBuffer();
  DeviceBuffer dy = call.buffer(static_cast<size_t>(M) * N * sizeof(float));
  bias_gelu(dx.as<float>(), db.as<float>(), dy.as<float>(), M, N,
            form == "erf" ? Epilogue::kGeluErf : Epilogue::kGeluTanh, call.stream.get());
  call.download<float>(dy, vo);
  return out;
}

// ---- kernel timing -----------------------------------------------------------------------------------

// Milliseconds of each of `reps` launches (after `warmup`), timed with events around each launch,
// on inputs drawn from N(0, 1) once and kept on the device.
static std::vector<double> benchmark_op(const std::string& op, const std::vector<long long>& dims,
                                        const std::string& precision, const std::string& epilogue_name,
                                        int warmup, int reps, int device) {
  check_precision(precision);
  const Epilogue epilogue = parse_epilogue(epilogue_name);
  if (reps <= 0 || warmup < 0) throw py::value_error("benchmark_op: reps must be positive, warmup >= 0");
  const std::map<std::string, size_t> arity = {{"linear", 3}, {"layernorm", 2}, {"attention", 4}, {"bias_gelu", 2}};
  const auto found = arity.find(op);
  if (found == arity.end())
    throw py::value_error("benchmark_op: unknown op '" + op + "'; one of linear, layernorm, attention, bias_gelu");
  if (dims.size() != found->second)
    throw py::value_error("benchmark_op: " + op + " takes " + std::to_string(found->second) + " dims, got " +
                          std::to_string(dims.size()));
  for (long long d : dims) positive_int(d, "every dim");
  if (op == "attention" && (dims[2] % dims[3] != 0 || dims[0] > 65535))
    throw py::value_error("benchmark_op: attention needs D divisible by heads and B <= 65535");
  auto dim = [&](size_t i) { return static_cast<int>(dims[i]); };
  std::function<void(cudaStream_t)> launch;
  py::gil_scoped_release nogil;
  Call call(device);
  std::vector<DeviceBuffer> keep;  // after the call: freed on its stream
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // n values rounded to the tag's type. The copy is on the call's stream, which the kernels run
  // on: a plain cudaMemcpy from pageable memory runs on the legacy default stream, which the
  // non-blocking stream does not wait for, and may return before its DMA has landed.
  auto random = [&](size_t n, auto tag) -> const void* {
    using T = decltype(tag);
    std::vector<float> host(n);
    for (float& v : host) v = normal(rng);
    keep.push_back(call.upload({host.data(), n}));
    if constexpr (!std::is_same_v<T, float>) {
      DeviceBuffer t = call.buffer(n * sizeof(T));
      cast<float, T>(keep.back().as<float>(), t.as<T>(), n, call.stream.get());
      keep.back() = std::move(t);  // the fp32 copy's free is ordered after the cast
    }
    CUDA_CHECK(cudaStreamSynchronize(call.stream.get()));  // before `host` goes
    return keep.back().as<void>();
  };
  auto output = [&](size_t bytes) {
    keep.push_back(call.buffer(bytes));
    return keep.back().as<void>();
  };
  by_precision(precision, [&](auto tag) {
    using T = decltype(tag);
    if (op == "linear") {  // dims: M, K, N
      const int M = dim(0), K = dim(1), N = dim(2);
      auto a = static_cast<const T*>(random(size_t(M) * K, tag));
      auto w = static_cast<const T*>(random(size_t(N) * K, tag));
      auto bias = static_cast<const float*>(random(N, 0.0f));
      auto residual = static_cast<const float*>(random(size_t(M) * N, 0.0f));
      // Output in T like the forward's qkv and fc1; residual epilogues write fp32 like proj/fc2.
      if (epilogue == Epilogue::kResidual || std::is_same_v<T, float>) {
        auto out = static_cast<float*>(output(size_t(M) * N * sizeof(float)));
        launch = [=](cudaStream_t s) {
          if constexpr (std::is_same_v<T, float>) linear_fp32(a, w, bias, residual, out, M, N, K, epilogue, s);
          else linear_tc<T, float>(a, w, bias, residual, out, M, N, K, epilogue, s);
        };
      } else {
        if constexpr (!std::is_same_v<T, float>) {
          auto out = static_cast<T*>(output(size_t(M) * N * sizeof(T)));
          launch = [=](cudaStream_t s) { linear_tc<T, T>(a, w, bias, nullptr, out, M, N, K, epilogue, s); };
        }
      }
    } else if (op == "layernorm") {  // dims: rows, C
      const int M = dim(0), C = dim(1);
      auto x = static_cast<const float*>(random(size_t(M) * C, 0.0f));
      auto w = static_cast<const float*>(random(C, 0.0f));
      auto b = static_cast<const float*>(random(C, 0.0f));
      auto y = static_cast<T*>(output(size_t(M) * C * sizeof(T)));
      launch = [=](cudaStream_t s) { layernorm<float, T>(x, C, w, b, y, M, C, 1e-6f, s); };
    } else if (op == "attention") {  // dims: B, T, D, heads
      const int B = dim(0), Tn = dim(1), D = dim(2), H = dim(3);
      auto qkv = static_cast<const T*>(random(size_t(B) * Tn * 3 * D, tag));
      auto y = static_cast<T*>(output(size_t(B) * Tn * D * sizeof(T)));
      launch = [=](cudaStream_t s) { attention<T>(qkv, y, B, Tn, D, H, s); };
    } else {  // bias_gelu, dims: M, N; fp32 only, the standalone kernel
      const int M = dim(0), N = dim(1);
      auto x = static_cast<const float*>(random(size_t(M) * N, 0.0f));
      auto b = static_cast<const float*>(random(N, 0.0f));
      auto y = static_cast<float*>(output(size_t(M) * N * sizeof(float)));
      const Epilogue form = epilogue == Epilogue::kGeluTanh ? epilogue : Epilogue::kGeluErf;
      launch = [=](cudaStream_t s) { bias_gelu(x, b, y, M, N, form, s); };
    }
  });
  const cudaStream_t s = call.stream.get();
  for (int i = 0; i < warmup; ++i) launch(s);
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  try {
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaEventRecord(start, s));
      launch(s);
      CUDA_CHECK(cudaEventRecord(stop, s));
      CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      times.push_back(ms);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return times;
}

// ---- bindings ----------------------------------------------------------------------------------------

void bind_ops(py::module_& m) {
  m.def("linear", &linear, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("epilogue") = "none", py::arg("residual") = py::none(), py::arg("precision") = "fp32",
        py::arg("device") = 0,
        "x (M, K) @ weight (N, K)^T + bias (N,), then the epilogue; fp32 on CUDA cores, bf16/fp16 "
        "on tensor cores (inputs rounded on the device, fp32 output)");
  m.def("layernorm", &layernorm_op, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("precision") = "fp32", py::arg("device") = 0, "LayerNorm over the rows of x (M, C); output rounded to precision");
  m.def("attention", &attention_op, py::arg("qkv"), py::arg("num_heads"), py::arg("precision") = "fp32",
        py::arg("queries") = py::none(), py::arg("device") = 0,
        "softmax(q k^T / sqrt(hd)) v of qkv (B, T, 3D) -> (B, Q, D); queries None: every token's "
        "(Q = T), 1: the class token's (the last block's path); inputs and output rounded to precision");
  m.def("patch_embed", &patch_embed_op, py::arg("images"), py::arg("weight"), py::arg("bias"),
        py::arg("precision") = "fp32", py::arg("device") = 0,
        "images (B, C, H, W), weight (D, C, P, P), bias (D,) or None -> (B, H/P * W/P, D): the "
        "patches in (c, ph, pw) order through the precision's linear (fp32 output)");
  m.def("bias_gelu", &bias_gelu_op, py::arg("x"), py::arg("bias"), py::arg("form") = "erf",
        py::arg("device") = 0,
        "gelu(x (M, N) + bias (N,)), the standalone kernel");
  m.def("benchmark_op", &benchmark_op, py::arg("op"), py::arg("dims"), py::arg("precision") = "fp32",
        py::arg("epilogue") = "none", py::arg("warmup") = 10, py::arg("reps") = 50, py::arg("device") = 0,
        "Milliseconds per launch of one kernel on device-resident random inputs. dims: linear "
        "(M, K, N), layernorm (rows, C), attention (B, T, D, heads), bias_gelu (M, N)");
}

}  // namespace polyvit_cuda
