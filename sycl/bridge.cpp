// polyvit._sycl: the small bridge between Python (dpctl) and the SYCL runtime's kernel compiler.
//
// Program builds SYCL C++ source into an executable kernel bundle on a dpctl.SyclQueue's device
// (the runtime's own JIT, cached persistently by SYCL_CACHE_PERSISTENT). Plan records kernel
// launches on dpctl.memory USM buffers and replays them, with host uploads before and downloads
// after, in one call that releases the GIL. All shapes live in Python; this file only checks
// that what it is handed is well formed.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sycl/sycl.hpp>

#include "dpctl4pybind11.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;
namespace syclexp = sycl::ext::oneapi::experimental;
using dpctl::memory::usm_memory;

// ---- program -----------------------------------------------------------------------------------

struct Program {
    sycl::context context;
    sycl::device device;
    std::map<std::string, sycl::kernel> kernels;
    std::string log;
};

static std::shared_ptr<Program> build_program(sycl::queue &queue, const std::string &source,
                                              const std::map<std::string, std::string> &headers,
                                              const std::vector<std::string> &names,
                                              const std::vector<std::string> &options) {
    auto device = queue.get_device();
    if (!device.ext_oneapi_can_build(syclexp::source_language::sycl))
        throw py::value_error("device '" + device.get_info<sycl::info::device::name>() +
                              "' cannot build SYCL source at run time "
                              "(ext_oneapi_can_build(sycl) is false)");
    if (names.empty()) throw py::value_error("build needs at least one kernel name");
    auto program = std::make_shared<Program>();
    program->context = queue.get_context();
    program->device = device;
    syclexp::include_files includes;
    for (const auto &[name, text] : headers) includes.add(name, text);
    {
        // the JIT runs for seconds without touching Python objects
        py::gil_scoped_release release;
        std::string log;
        try {
            auto source_bundle = syclexp::create_kernel_bundle_from_source(
                program->context, syclexp::source_language::sycl, source,
                syclexp::properties{includes});
            auto bundle = syclexp::build(source_bundle, {device},
                                         syclexp::properties{syclexp::build_options{options},
                                                             syclexp::save_log{&log}});
            for (const auto &name : names) {
                if (!bundle.ext_oneapi_has_kernel(name))
                    throw std::runtime_error("kernel '" + name + "' is not in the built source");
                program->kernels.emplace(name, bundle.ext_oneapi_get_kernel(name));
            }
        } catch (const std::exception &e) {
            // sycl::exception for bad source; anything else (std::length_error from a damaged
            // persistent cache entry) is a failed build too, which the backend can heal
            throw std::runtime_error(std::string("SYCL kernel build failed: ") + e.what() +
                                     (log.empty() ? "" : "\n" + log));
        }
        program->log = log;
    }
    return program;
}

// ---- plan --------------------------------------------------------------------------------------

struct Arg {
    enum Kind { pointer, integer, real } kind;
    void *p = nullptr;
    int i = 0;
    float f = 0.0f;
};

struct Launch {
    std::string name;
    sycl::kernel kernel;
    int dims;
    size_t global[3];
    size_t local[3];
    std::vector<Arg> args;
};

// One host <-> USM copy: the numpy array is kept alive by the Plan.run caller's frame.
struct Copy {
    char *usm;
    void *host;
    size_t bytes;
};

class Plan {
public:
    explicit Plan(std::shared_ptr<Program> program) : program_(std::move(program)) {}

    // Record a launch. global and local are in SYCL order (the last dimension is the fastest);
    // args are dpctl.memory objects, (memory, byte offset) pairs, ints (int32) or floats.
    void add(const std::string &name, const std::vector<size_t> &global,
             const std::vector<size_t> &local, const py::list &args) {
        auto found = program_->kernels.find(name);
        if (found == program_->kernels.end())
            throw py::value_error("no kernel '" + name + "' in this program");
        if (global.empty() || global.size() > 3 || global.size() != local.size())
            throw py::value_error("launch of '" + name + "': global and local ranges need the "
                                  "same number (1 to 3) of dimensions");
        Launch launch{name, found->second, static_cast<int>(global.size()), {1, 1, 1},
                      {1, 1, 1}, {}};
        for (size_t d = 0; d < global.size(); ++d) {
            if (global[d] == 0 || local[d] == 0 || global[d] % local[d])
                throw py::value_error("launch of '" + name + "': global range " +
                                      std::to_string(global[d]) + " is not a positive multiple "
                                      "of local range " + std::to_string(local[d]));
            launch.global[d] = global[d];
            launch.local[d] = local[d];
        }
        auto expected = launch.kernel.get_info<sycl::info::kernel::num_args>();
        if (args.size() != expected)
            throw py::value_error("launch of '" + name + "': " + std::to_string(args.size()) +
                                  " arguments given, the kernel takes " +
                                  std::to_string(expected));
        for (const auto &item : args) launch.args.push_back(to_arg(name, item));
        launches_.push_back(std::move(launch));
    }

    // Upload (memory, array) pairs, replay every launch, download (memory, array) pairs, wait.
    void run(sycl::queue &queue, const py::list &uploads, const py::list &downloads) {
        if (queue.get_context() != program_->context || queue.get_device() != program_->device)
            throw py::value_error("the queue is not on the device this plan was built for");
        std::vector<Copy> in = copies(uploads, true), out = copies(downloads, false);
        py::gil_scoped_release release;
        for (const auto &c : in) queue.memcpy(c.usm, c.host, c.bytes);
        for (const auto &launch : launches_) submit(queue, launch);
        for (const auto &c : out) queue.memcpy(c.host, c.usm, c.bytes);
        queue.wait_and_throw();
    }

    size_t size() const { return launches_.size(); }

private:
    Arg to_arg(const std::string &name, const py::handle &item) {
        Arg arg;
        if (py::isinstance<py::bool_>(item))
            throw py::type_error("launch of '" + name + "': bool argument; pass an int");
        if (py::isinstance<py::int_>(item)) {
            long long v = item.cast<long long>();
            if (v < INT32_MIN || v > INT32_MAX)
                throw py::value_error("launch of '" + name + "': integer argument " +
                                      std::to_string(v) + " does not fit in int32");
            arg.kind = Arg::integer;
            arg.i = static_cast<int>(v);
        } else if (py::isinstance<py::float_>(item)) {
            arg.kind = Arg::real;
            arg.f = item.cast<float>();
        } else {
            py::handle mem = item;
            size_t offset = 0;
            if (py::isinstance<py::tuple>(item)) {
                auto pair = item.cast<py::tuple>();
                if (pair.size() != 2)
                    throw py::type_error("launch of '" + name + "': a pointer argument is a "
                                         "dpctl.memory object or (memory, byte offset)");
                mem = pair[0];
                offset = pair[1].cast<size_t>();
            }
            auto usm = checked_memory(name, mem);
            if (offset >= usm.get_nbytes())
                throw py::value_error("launch of '" + name + "': byte offset " +
                                      std::to_string(offset) + " is past the end of a " +
                                      std::to_string(usm.get_nbytes()) + "-byte buffer");
            arg.kind = Arg::pointer;
            arg.p = usm.get_pointer() + offset;
            keep_.append(mem);
        }
        return arg;
    }

    usm_memory checked_memory(const std::string &what, const py::handle &mem) {
        if (!py::isinstance<usm_memory>(mem))
            throw py::type_error(what + ": expected a dpctl.memory USM object, got " +
                                 std::string(py::str(py::type::of(mem).attr("__name__"))));
        auto usm = mem.cast<usm_memory>();
        if (usm.get_queue().get_context() != program_->context)
            throw py::value_error(what + ": the USM buffer belongs to another SYCL context");
        return usm;
    }

    std::vector<Copy> copies(const py::list &pairs, bool upload) {
        std::vector<Copy> result;
        const char *what = upload ? "upload" : "download";
        for (const auto &item : pairs) {
            auto pair = item.cast<py::tuple>();
            if (pair.size() != 2) throw py::type_error(std::string(what) + ": (memory, array)");
            auto usm = checked_memory(what, pair[0]);
            if (!py::isinstance<py::array>(pair[1]))
                throw py::type_error(std::string(what) + ": expected a numpy array");
            auto array = pair[1].cast<py::array>();
            if (!(array.flags() & py::array::c_style))
                throw py::value_error(std::string(what) + ": the array is not C-contiguous");
            if (!upload && !array.writeable())
                throw py::value_error("download: the array is read-only");
            size_t bytes = static_cast<size_t>(array.nbytes());
            if (bytes > usm.get_nbytes())
                throw py::value_error(std::string(what) + ": " + std::to_string(bytes) +
                                      "-byte array does not fit a " +
                                      std::to_string(usm.get_nbytes()) + "-byte buffer");
            void *host = upload ? const_cast<void *>(array.data()) : array.mutable_data();
            result.push_back({usm.get_pointer(), host, bytes});
        }
        return result;
    }

    static void submit(sycl::queue &queue, const Launch &launch) {
        queue.submit([&](sycl::handler &h) {
            for (size_t i = 0; i < launch.args.size(); ++i) {
                const Arg &a = launch.args[i];
                if (a.kind == Arg::pointer) h.set_arg(static_cast<int>(i), a.p);
                else if (a.kind == Arg::integer) h.set_arg(static_cast<int>(i), a.i);
                else h.set_arg(static_cast<int>(i), a.f);
            }
            const size_t *g = launch.global, *l = launch.local;
            if (launch.dims == 1)
                h.parallel_for(sycl::nd_range<1>({g[0]}, {l[0]}), launch.kernel);
            else if (launch.dims == 2)
                h.parallel_for(sycl::nd_range<2>({g[0], g[1]}, {l[0], l[1]}), launch.kernel);
            else
                h.parallel_for(sycl::nd_range<3>({g[0], g[1], g[2]}, {l[0], l[1], l[2]}),
                               launch.kernel);
        });
    }

    std::shared_ptr<Program> program_;
    std::vector<Launch> launches_;
    py::list keep_;  // the USM buffers the recorded launches point into
};

// ---- module ------------------------------------------------------------------------------------

PYBIND11_MODULE(_sycl, m) {
    m.doc() = "SYCL runtime compilation and launch replay for polyvit's sycl backend";

    m.def("can_build_sycl", [](sycl::device &device) {
        return device.ext_oneapi_can_build(syclexp::source_language::sycl);
    }, py::arg("device"), "Whether the device can build SYCL source at run time");

    py::class_<Program, std::shared_ptr<Program>>(m, "Program")
        .def(py::init(&build_program), py::arg("queue"), py::arg("source"),
             py::arg("headers"), py::arg("kernels"), py::arg("options"),
             "Build SYCL source (with virtual include files) for the queue's device")
        .def_property_readonly("kernels", [](const Program &p) {
            std::vector<std::string> names;
            for (const auto &kv : p.kernels) names.push_back(kv.first);
            return names;
        })
        .def_readonly("log", &Program::log);

    py::class_<Plan>(m, "Plan")
        .def(py::init<std::shared_ptr<Program>>(), py::arg("program"))
        .def("add", &Plan::add, py::arg("kernel"), py::arg("global_range"),
             py::arg("local_range"), py::arg("args"))
        .def("run", &Plan::run, py::arg("queue"), py::arg("uploads") = py::list(),
             py::arg("downloads") = py::list())
        .def("__len__", &Plan::size);
}
