// polyvit._cuda: the CUDA backend's Python module. Probing that never crashes, the Model
// (config + weights -> logits, host or device images in, numpy or device logits out), the ops.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "device.h"
#include "device_array.h"
#include "ops.h"
#include "vit.h"

namespace py = pybind11;

namespace polyvit_cuda {

// ---- config and weights from Python ------------------------------------------------------------------

template <class T>
static T field(const py::dict& config, const char* key) {
  if (!config.contains(key)) throw py::value_error(std::string("config has no field '") + key + "'");
  try {
    return config[key].cast<T>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string("config field '") + key + "' has the wrong type");
  }
}

static ViTShape shape_from(const py::dict& config) {
  ViTShape s{};
  s.image_size = field<int>(config, "image_size");
  s.patch_size = field<int>(config, "patch_size");
  s.in_chans = field<int>(config, "in_chans");
  s.embed_dim = field<int>(config, "embed_dim");
  s.depth = field<int>(config, "depth");
  s.num_heads = field<int>(config, "num_heads");
  s.mlp_dim = field<int>(config, "mlp_dim");
  s.num_classes = field<int>(config, "num_classes");
  s.ln_eps = static_cast<float>(field<double>(config, "ln_eps"));
  s.qkv_bias = field<bool>(config, "qkv_bias");
  s.patch_norm_pre = field<bool>(config, "patch_norm_pre");
  s.patch_norm_post = field<bool>(config, "patch_norm_post");
  const std::string gelu = field<std::string>(config, "gelu");
  if (gelu != "erf" && gelu != "tanh") throw py::value_error("config gelu must be 'erf' or 'tanh', got '" + gelu + "'");
  s.gelu = gelu == "erf" ? Epilogue::kGeluErf : Epilogue::kGeluTanh;
  return s;  // make_engine validates it, with the weights, before touching the device
}

// Borrowed views of the arrays; the dict keeps them alive while the engine uploads them.
static HostWeights weights_from(const py::dict& weights) {
  HostWeights out;
  for (const auto& [key, value] : weights) {
    const std::string name = py::str(key);
    const py::array a = host_float32(value, ("weight " + name).c_str());
    std::vector<long long> shape(a.shape(), a.shape() + a.ndim());
    out[name] = HostTensor{static_cast<const float*>(a.data()), shape};
  }
  return out;
}

// ---- the model ---------------------------------------------------------------------------------------

class Model {
 public:
  Model(const py::dict& config, const py::dict& weights, const std::string& precision, int device,
        bool cuda_graph, int batch_sizes_kept)
      : shape_(shape_from(config)), precision_(precision) {
    const HostWeights host = weights_from(weights);
    py::gil_scoped_release nogil;
    engine_ = make_engine(shape_, host, precision, device, cuda_graph, batch_sizes_kept);
    DeviceScope scope(device);  // the event lives on the engine's device
    ready_ = std::make_unique<Event>();
  }

  // images: (B, C, H, W) float32, a numpy array or a CUDA array (CUDA array interface or DLPack,
  // read in place). output "numpy" or "device" (a DeviceArray on the model's device).
  py::object run(py::handle images, const std::string& output) {
    if (output != "numpy" && output != "device")
      throw py::value_error("output must be 'numpy' or 'device', got '" + output + "'");
    if (py::isinstance<py::array>(images)) {
      const py::array a = host_float32(images, "images");
      check_shape(std::vector<long long>(a.shape(), a.shape() + a.ndim()));
      return execute(static_cast<const float*>(a.data()), false, static_cast<int>(a.shape(0)), nullptr, output);
    }
    const std::unique_ptr<DeviceInput> in = borrow_device_array(images, engine_->stream(), engine_->device());
    check_shape(in->shape);
    return execute(in->data, true, static_cast<int>(in->shape[0]), in.get(), output);
  }

  std::vector<int> cached_batch_sizes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return engine_->cached_batch_sizes();
  }

  void clear_cache() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceScope scope(engine_->device());
    engine_->clear_cache();
  }

  int device() const { return engine_->device(); }
  const std::string& precision() const { return precision_; }

 private:
  void check_shape(const std::vector<long long>& shape) const {
    const long long C = shape_.in_chans, S = shape_.image_size;
    if (shape.size() != 4 || shape[1] != C || shape[2] != S || shape[3] != S) {
      std::string got;
      for (long long d : shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
      throw py::value_error("images have shape (" + got + "), expected (B, " + std::to_string(C) + ", " +
                            std::to_string(S) + ", " + std::to_string(S) + ")");
    }
    if (shape[0] < 1 || shape[0] > 65535)
      throw py::value_error("batch size must be 1 to 65535, got " + std::to_string(shape[0]) +
                            "; split larger batches");
  }

  // One forward under the model's lock, with the GIL released; synchronised before returning,
  // so a borrowed input may be released and the logits read on any stream.
  py::object execute(const float* images, bool on_device, int batch, const DeviceInput* in,
                     const std::string& output) {
    const size_t bytes = static_cast<size_t>(batch) * shape_.num_classes * sizeof(float);
    std::optional<py::array_t<float>> host;
    std::shared_ptr<DeviceBuffer> device_out;
    if (output == "numpy") host.emplace(std::vector<py::ssize_t>{batch, shape_.num_classes});
    float* host_out = host ? host->mutable_data() : nullptr;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mutex_);
      DeviceScope scope(engine_->device());
      const cudaStream_t s = engine_->stream();
      try {
        if (on_device) check_device_pointer(images, engine_->device());
        if (in && in->has_stream) {  // the producer's pending writes come first
          CUDA_CHECK(cudaEventRecord(ready_->get(), in->producer));
          CUDA_CHECK(cudaStreamWaitEvent(s, ready_->get(), 0));
        }
        const float* logits = engine_->forward(images, on_device, batch);
        if (host_out) {
          CUDA_CHECK(cudaMemcpyAsync(host_out, logits, bytes, cudaMemcpyDeviceToHost, s));
        } else {
          // Stream-ordered, so that neither this allocation nor the free when the caller drops
          // the array waits for the whole device. Freed on the legacy default stream: after
          // whatever torch's default stream has queued on it by then.
          device_out = std::make_shared<DeviceBuffer>(DeviceBuffer::stream_ordered(bytes, s, cudaStreamLegacy));
          CUDA_CHECK(cudaMemcpyAsync(device_out->as<float>(), logits, bytes, cudaMemcpyDeviceToDevice, s));
        }
        CUDA_CHECK(cudaStreamSynchronize(s));
      } catch (...) {
        cudaStreamSynchronize(s);  // nothing may still read the input once the caller has it back
        cudaGetLastError();
        throw;
      }
    }
    if (host) return std::move(*host);
    return py::cast(DeviceArray(device_out, {batch, shape_.num_classes}));
  }

  ViTShape shape_;
  std::string precision_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Event> ready_;
  std::mutex mutex_;
};

// ---- probing -----------------------------------------------------------------------------------------

static py::dict probe_dict() {
  const Probe& p = probe();
  py::dict d;
  d["count"] = p.count;
  d["error"] = p.error;
  d["runtime_version"] = p.runtime_version;
  d["driver_version"] = p.driver_version;
  py::list devices;
  for (const DeviceInfo& info : p.devices) {
    py::dict dev;
    dev["index"] = info.index;
    dev["name"] = info.name;
    dev["compute_capability"] = py::make_tuple(info.major, info.minor);
    dev["memory"] = info.memory;
    dev["multiprocessors"] = info.sm_count;
    devices.append(dev);
  }
  d["devices"] = devices;
  return d;
}

// The host-side reading of a device array as run() does it (DLPack first, with `stream` as the
// consumer's stream; else the CUDA array interface), for tests of the boundary without a device.
// "stream" in the result: the stream whose pending work run() would wait for, or None.
static py::dict inspect_device_array(py::handle obj, uintptr_t stream) {
  const std::unique_ptr<DeviceInput> in =
      borrow_device_array(obj, reinterpret_cast<cudaStream_t>(stream), /*device=*/-1);
  py::dict d;
  d["data"] = reinterpret_cast<uintptr_t>(in->data);
  d["shape"] = py::tuple(py::cast(in->shape));
  d["stream"] = in->has_stream ? py::cast(reinterpret_cast<uintptr_t>(in->producer)) : py::none();
  return d;
}

// The calling thread's current CUDA device, for tests that the backend leaves it as it was.
static int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace polyvit_cuda

// ---- module ------------------------------------------------------------------------------------------

PYBIND11_MODULE(_cuda, m) {
  using namespace polyvit_cuda;
  m.doc() = "polyvit's CUDA backend: hand-written kernels, one CUDA graph per batch size";
  py::register_exception<CudaError>(m, "CudaError", PyExc_RuntimeError);
  m.attr("architectures") = POLYVIT_CUDA_ARCHITECTURES;
  m.attr("compiled_runtime_version") = CUDART_VERSION;
  m.def("probe", &probe_dict,
        "What the CUDA runtime sees: {count, error, runtime_version, driver_version, devices}. "
        "Never raises; error holds the driver's reason when count is 0");
  m.def("inspect_device_array", &inspect_device_array, py::arg("obj"), py::arg("stream") = 3,
        "The host-side reading of a device array as Model.run does it: {data, shape, stream (the "
        "stream whose pending work run would wait for, or None)}. stream: the consumer stream "
        "handle passed to __dlpack__ (default 3: any handle above DLPack's special 0, 1, 2)");
  m.def("current_device", &current_device, "The calling thread's current CUDA device (cudaGetDevice)");
  bind_device_array(m);
  bind_ops(m);
  py::class_<Model>(m, "Model")
      .def(py::init<const py::dict&, const py::dict&, const std::string&, int, bool, int>(),
           py::arg("config"), py::arg("weights"), py::arg("precision"), py::arg("device"),
           py::arg("cuda_graph"), py::arg("batch_sizes_kept"),
           "config: polyvit.backends._native.config_fields(cfg); weights: the shared format's "
           "names -> float32 arrays. batch_sizes_kept: plans kept, least recently used dropped")
      .def("run", &Model::run, py::arg("images"), py::arg("output") = "numpy")
      .def("cached_batch_sizes", &Model::cached_batch_sizes, "least recently used first")
      .def("clear_cache", &Model::clear_cache)
      .def_property_readonly("device", &Model::device)
      .def_property_readonly("precision", &Model::precision);
}
