#include "device_array.h"

#include <pybind11/stl.h>

#include <optional>
#include <string>

namespace polyvit_cuda {

// ---- borrowed inputs -------------------------------------------------------------------------------

DeviceInput::~DeviceInput() {
  if (managed && managed->deleter) managed->deleter(managed);
}

static std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

// Row-major strides in elements; dimensions of size 1 may carry any stride.
static bool is_c_contiguous(const std::vector<long long>& shape, const std::vector<long long>& strides) {
  long long expected = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

static void from_cuda_array_interface(py::handle obj, DeviceInput& in) {
  const py::object iface = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(iface))
    throw py::type_error("__cuda_array_interface__ of " + type_name(obj) + " is not a dict");
  const py::dict d = iface.cast<py::dict>();
  for (const char* key : {"shape", "typestr", "data"})
    if (!d.contains(key))
      throw py::value_error(std::string("__cuda_array_interface__ has no '") + key + "'");
  const std::string typestr = py::str(d["typestr"]);
  if (typestr != "<f4")
    throw py::type_error("images have typestr '" + typestr + "', expected float32 ('<f4'); "
                         "convert them (e.g. tensor.float())");
  for (py::handle dim : d["shape"].cast<py::tuple>()) in.shape.push_back(dim.cast<long long>());
  if (d.contains("strides") && !d["strides"].is_none()) {
    std::vector<long long> strides;
    for (py::handle s : d["strides"].cast<py::tuple>()) {
      const long long bytes = s.cast<long long>();
      if (bytes % 4) throw py::value_error("images have strides that are not whole float32 elements");
      strides.push_back(bytes / 4);
    }
    if (strides.size() != in.shape.size() || !is_c_contiguous(in.shape, strides))
      throw py::value_error("images are not C-contiguous; pass a contiguous array (e.g. tensor.contiguous())");
  }
  if (d.contains("mask") && !d["mask"].is_none())
    throw py::value_error("masked arrays are not supported as images");
  const py::tuple data = d["data"].cast<py::tuple>();
  if (data.size() != 2) throw py::value_error("__cuda_array_interface__ 'data' must be (pointer, read_only)");
  in.data = reinterpret_cast<const float*>(data[0].cast<uintptr_t>());
  if (!d.contains("stream")) {  // v2 (torch's) names no stream: wait for the legacy default
    in.has_stream = true;       // stream, where torch's default stream and unnamed work run
    in.producer = cudaStreamLegacy;
  } else if (!d["stream"].is_none()) {  // v3: None says the data is ready
    const long long stream = d["stream"].cast<long long>();
    if (stream == 0)
      throw py::value_error("__cuda_array_interface__ 'stream' is 0, which the protocol forbids");
    in.has_stream = true;
    in.producer = stream == 1   ? cudaStreamLegacy
                  : stream == 2 ? cudaStreamPerThread
                                : reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(stream));
  }
}

static std::string not_in_device_memory(int device_type) {
  return "images are not in CUDA device memory (DLPack device type " + std::to_string(device_type) +
         "); pass a numpy array for host images";
}

// __dlpack_device__(), where the exporter has it: refuses host arrays and arrays on another
// device before __dlpack__ is asked to order anything on our stream.
static void check_dlpack_device(py::handle obj, int device) {
  if (!py::hasattr(obj, "__dlpack_device__")) return;
  const py::tuple where = obj.attr("__dlpack_device__")().cast<py::tuple>();
  if (where.size() != 2) throw py::value_error("__dlpack_device__ of " + type_name(obj) + " is not (type, index)");
  const int type = where[0].cast<int>(), index = where[1].cast<int>();
  if (type != dlpack::kCUDA && type != dlpack::kCUDAManaged) throw py::value_error(not_in_device_memory(type));
  if (type == dlpack::kCUDA && device >= 0 && index != device)
    throw py::value_error("images are on CUDA device " + std::to_string(index) +
                          " but the model is on device " + std::to_string(device));
}

static void from_dlpack(py::handle obj, cudaStream_t consumer, int device, DeviceInput& in) {
  check_dlpack_device(obj, device);
  std::optional<DeviceScope> scope;  // the producer's current device must be the array's
  if (device >= 0) scope.emplace(device);
  py::object capsule;
  try {  // the producer orders its pending work before our stream
    capsule = obj.attr("__dlpack__")(
        py::arg("stream") = consumer ? py::object(py::int_(reinterpret_cast<uintptr_t>(consumer))) : py::none());
    if (!consumer) {  // stream=None: ready on the legacy default stream
      in.has_stream = true;
      in.producer = cudaStreamLegacy;
    }
  } catch (const py::error_already_set& e) {
    if (!e.matches(PyExc_TypeError)) throw;
    capsule = obj.attr("__dlpack__")();  // an exporter without the stream keyword: DLPack's
    in.has_stream = true;                // default, ready on the legacy default stream
    in.producer = cudaStreamLegacy;
  }
  if (!PyCapsule_IsValid(capsule.ptr(), "dltensor"))
    throw py::value_error("__dlpack__ of " + type_name(obj) + " did not return an unused 'dltensor' capsule");
  auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
  if (!managed) throw py::error_already_set();
  // Consume it: from here on we, not the capsule, must call the deleter.
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");
  in.managed = managed;
  const dlpack::Tensor& t = managed->dl_tensor;
  if (t.device.device_type != dlpack::kCUDA && t.device.device_type != dlpack::kCUDAManaged)
    throw py::value_error(not_in_device_memory(t.device.device_type));
  if (t.dtype.code != dlpack::kFloat || t.dtype.bits != 32 || t.dtype.lanes != 1)
    throw py::type_error("images are not float32 (DLPack type code " + std::to_string(t.dtype.code) +
                         ", " + std::to_string(t.dtype.bits) + " bits); convert them (e.g. tensor.float())");
  for (int i = 0; i < t.ndim; ++i) in.shape.push_back(t.shape[i]);
  if (t.strides) {
    std::vector<long long> strides(t.strides, t.strides + t.ndim);
    if (!is_c_contiguous(in.shape, strides))
      throw py::value_error("images are not C-contiguous; pass a contiguous array (e.g. tensor.contiguous())");
  }
  in.data = reinterpret_cast<const float*>(static_cast<const char*>(t.data) + t.byte_offset);
}

std::unique_ptr<DeviceInput> borrow_device_array(py::handle obj, cudaStream_t consumer, int device) {
  auto in = std::make_unique<DeviceInput>();
  in->owner = py::reinterpret_borrow<py::object>(obj);
  if (py::hasattr(obj, "__dlpack__")) {  // first: the one protocol that orders on our stream
    try {
      from_dlpack(obj, consumer, device, *in);
    } catch (const py::error_already_set& e) {
      // torch refuses to export from a device other than the one it believes current, which
      // can differ from cudaGetDevice's on a thread where torch deferred its cudaSetDevice:
      // the interface still reads it, ordered after that device's legacy default stream.
      if (!e.matches(PyExc_BufferError) || !py::hasattr(obj, "__cuda_array_interface__")) throw;
      in = std::make_unique<DeviceInput>();
      in->owner = py::reinterpret_borrow<py::object>(obj);
      from_cuda_array_interface(obj, *in);
    }
  } else if (py::hasattr(obj, "__cuda_array_interface__")) {
    from_cuda_array_interface(obj, *in);
  } else {
    throw py::type_error("images must be a numpy array, or a CUDA array exposing "
                         "__cuda_array_interface__ or __dlpack__ (torch, CuPy), got " + type_name(obj));
  }
  if (in->data == nullptr) throw py::value_error("images have a null device pointer");
  return in;
}

void check_device_pointer(const void* ptr, int device) {
  cudaPointerAttributes attr{};
  CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw py::value_error("images are not in CUDA device memory; pass a numpy array for host images");
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw py::value_error("images are on CUDA device " + std::to_string(attr.device) +
                          " but the model is on device " + std::to_string(device));
}

// ---- the output array --------------------------------------------------------------------------------

DeviceArray::DeviceArray(std::shared_ptr<DeviceBuffer> buffer, std::vector<long long> shape)
    : buffer_(std::move(buffer)), shape_(std::move(shape)) {}

// Version 3 with stream None: run() synchronises before it returns, so the data is ready.
py::dict DeviceArray::cuda_array_interface() const {
  py::dict d;
  d["shape"] = py::tuple(py::cast(shape_));
  d["typestr"] = "<f4";
  d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(buffer_->as<float>()), false);
  d["strides"] = py::none();
  d["version"] = 3;
  d["stream"] = py::none();
  return d;
}

namespace {

// What an exported capsule owns: the tensor header, its shape, and a share of the buffer.
struct Exported {
  dlpack::ManagedTensor managed;
  std::vector<int64_t> shape;
  std::shared_ptr<DeviceBuffer> buffer;
};

void exported_deleter(dlpack::ManagedTensor* managed) {
  delete static_cast<Exported*>(managed->manager_ctx);
}

// A capsule nobody consumed still owns its tensor.
void capsule_destructor(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* managed = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    if (managed && managed->deleter) managed->deleter(managed);
  }
}

}  // namespace

py::capsule DeviceArray::dlpack(py::object stream, py::object max_version, py::object dl_device,
                                py::object copy) const {
  (void)stream;       // the data is ready on every stream (see cuda_array_interface)
  (void)max_version;  // an unversioned capsule is what every consumer accepts
  if (!dl_device.is_none()) {
    const auto want = dl_device.cast<std::pair<int, int>>();
    if (want.first != dlpack::kCUDA || want.second != device())
      throw py::buffer_error("the logits live on CUDA device " + std::to_string(device()) +
                             "; use numpy() for a host copy");
  }
  if (!copy.is_none() && copy.cast<bool>())
    throw py::buffer_error("__dlpack__(copy=True) is not supported; use numpy() for a copy");
  auto* e = new Exported{{}, std::vector<int64_t>(shape_.begin(), shape_.end()), buffer_};
  dlpack::Tensor& t = e->managed.dl_tensor;
  t.data = buffer_->as<float>();
  t.device = {dlpack::kCUDA, device()};
  t.ndim = static_cast<int32_t>(e->shape.size());
  t.dtype = {dlpack::kFloat, 32, 1};
  t.shape = e->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  e->managed.manager_ctx = e;
  e->managed.deleter = exported_deleter;
  PyObject* capsule = PyCapsule_New(&e->managed, "dltensor", capsule_destructor);
  if (!capsule) {
    delete e;
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::capsule>(capsule);
}

py::tuple DeviceArray::dlpack_device() const { return py::make_tuple(static_cast<int>(dlpack::kCUDA), device()); }

py::array_t<float> DeviceArray::numpy() const {
  std::vector<py::ssize_t> shape(shape_.begin(), shape_.end());
  py::array_t<float> host(shape);
  float* dst = host.mutable_data();
  {
    py::gil_scoped_release nogil;
    DeviceScope scope(device());
    CUDA_CHECK(cudaMemcpy(dst, buffer_->as<float>(), buffer_->bytes(), cudaMemcpyDeviceToHost));
  }
  return host;
}

void bind_device_array(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray",
                          "float32 array in CUDA device memory; torch.as_tensor(a, device='cuda'), "
                          "torch.from_dlpack(a) and cupy.asarray(a) take it without a copy")
      .def_property_readonly("shape", [](const DeviceArray& a) { return py::tuple(py::cast(a.shape())); })
      .def_property_readonly("device", &DeviceArray::device)
      .def_property_readonly("__cuda_array_interface__", &DeviceArray::cuda_array_interface)
      .def("__dlpack__", &DeviceArray::dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(),
           py::arg("copy") = py::none())
      .def("__dlpack_device__", &DeviceArray::dlpack_device)
      .def("numpy", &DeviceArray::numpy, "A host copy as a numpy array")
      .def("__repr__", [](const DeviceArray& a) {
        std::string s = "DeviceArray(shape=(";
        for (size_t i = 0; i < a.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(a.shape()[i]);
        return s + "), dtype=float32, device=cuda:" + std::to_string(a.device()) + ")";
      });
}

}  // namespace polyvit_cuda
