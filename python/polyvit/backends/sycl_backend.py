"""Backend "sycl": SYCL C++ kernels (sycl/kernels/) compiled at run time by the SYCL runtime's
kernel compiler and launched through dpctl, on any SYCL device (the OpenCL CPU device by default).

How it fits together:
- polyvit._sycl, a small pybind11 bridge, builds the kernel sources into a kernel bundle for the
  device (a JIT of a few seconds, then kept in the runtime's persistent cache under
  cache_root()/"sycl") and replays recorded launches on dpctl.memory USM buffers with the GIL
  released.
- This module owns every shape and tile size: it passes the tile sizes to the kernel compiler
  as defines, packs the weights once, uploads them once, and records for each batch size one
  plan of launches (the whole forward pass) over preallocated buffers.

The SYCL runtime reads its environment when dpctl loads, so _dpctl() sets OCL_ICD_FILENAMES
(where the pip-installed OpenCL CPU runtime is) and the persistent kernel cache first, unless the
user set them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from ..weights import expected_shapes
from . import _native
from .base import Backend, Ops, device_option

INSTALL = ('pip install dpctl==0.22.1 intel-sycl-rt==2026.2.0 intel-opencl-rt==2026.2.0 '
           '(the sycl extra), then reinstall polyvit so that its SYCL bridge is built; see '
           'docs/backends/sycl.md')
DEFAULT_DEVICE = "opencl:cpu"

# Tile sizes, defined here only: the kernels receive them as -DPOLYVIT_<NAME> and refuse to
# compile without them (sycl/kernels/common.hpp).
VECTOR = 16   # floats per sycl::vec register in the kernels; attention pads score rows to it
PANEL = 64    # outputs per packed weight panel of the GEMM (linear.cpp)
ROWS = 4      # rows of x per GEMM work-item (linear.cpp)
QUERIES = 4   # queries per work-item of attention_vec (attention.cpp)
LANES = 16    # work-items per group of the row kernels (they read it from their local range)

LINEAR_KERNELS = {"none": "linear_bias", "gelu_erf": "linear_bias_gelu_erf",
                  "gelu_tanh": "linear_bias_gelu_tanh", "residual": "linear_bias_residual"}
PANEL_SUFFIX = {"fp32": "", "bf16": "_bf16", "fp16": "_fp16"}  # of the GEMM kernels' names
KERNELS = ("bias_gelu_erf", "bias_gelu_tanh", "layernorm", "attention", "attention_vec16",
           "attention_vec32", "attention_vec64", "patch_im2col", "embed_tokens", "class_rows")
VECTOR_HEAD_DIMS = (16, 32, 64)  # head dims with an attention_vec kernel


# ---- environment and the kernel cache ------------------------------------------------------------

def cache_dir() -> Path:
    """Where this backend keeps compiled kernels between processes: the SYCL runtime's
    persistent cache in runtime/, the manifest of what it wrote, and the build lock."""
    return _native.cache_root() / "sycl"


def _opencl_cpu_library() -> str | None:
    """libintelocl.so of the intel-opencl-rt wheel, if it is installed."""
    try:
        dist = importlib.metadata.distribution("intel-opencl-rt")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name == "libintelocl.so":
            path = Path(dist.locate_file(f)).resolve()
            if path.exists():
                return str(path)
    return None


_env_lock = threading.Lock()
_dpctl_module = None
_dpctl_imported_by_others = False  # dpctl was loaded before prepare_environment could run
_managed_cache: Path | None = None  # the runtime's cache folder when this module chose it
# Set next to SYCL_CACHE_DIR when this module chose it, so that a child process, which inherits
# both, tells polyvit's choice (its own to redo) from a user's (left alone).
CHOSEN_CACHE = "POLYVIT_SYCL_CHOSEN_CACHE"


def prepare_environment() -> None:
    """Set what the SYCL runtime reads when dpctl loads (unless the user set it): where the
    pip-installed OpenCL CPU runtime is, and the persistent kernel cache. Call it before
    anything imports dpctl: Ray, for one, imports dpctl on `import ray` to look for Intel GPUs
    (polyvit.inference.ray_engine.import_ray calls this first). Safe to call more than once."""
    global _managed_cache, _dpctl_imported_by_others
    with _env_lock:
        if _dpctl_module is not None or "dpctl" in sys.modules:
            # too late for this process: remember why there may be no device
            _dpctl_imported_by_others = _dpctl_module is None and \
                "OCL_ICD_FILENAMES" not in os.environ
            return
        if "OCL_ICD_FILENAMES" not in os.environ:
            library = _opencl_cpu_library()
            if library:
                os.environ["OCL_ICD_FILENAMES"] = library
        inherited = os.environ.get(CHOSEN_CACHE)
        if inherited is not None and os.environ.get("SYCL_CACHE_DIR") == inherited:
            for name in ("SYCL_CACHE_PERSISTENT", "SYCL_CACHE_DIR", CHOSEN_CACHE):
                os.environ.pop(name, None)  # a parent polyvit's choice: choose again here
        if "SYCL_CACHE_PERSISTENT" not in os.environ and "SYCL_CACHE_DIR" not in os.environ:
            folder = cache_dir() / "runtime"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if not os.access(folder.parent, os.W_OK) or not os.access(folder, os.W_OK):
                    raise PermissionError(folder)
                os.environ["SYCL_CACHE_PERSISTENT"] = "1"
                os.environ["SYCL_CACHE_DIR"] = os.environ[CHOSEN_CACHE] = str(folder)
                _managed_cache = folder
            except OSError:
                pass  # no writable cache: every process pays the JIT, nothing breaks


def _dpctl():
    """Import dpctl after setting what the SYCL runtime reads at load time."""
    global _dpctl_module
    if _dpctl_module is None:
        prepare_environment()
        with _env_lock:
            if _dpctl_module is None:
                import dpctl
                import dpctl.memory

                _dpctl_module = dpctl
    return _dpctl_module


def _bridge():
    from .. import _sycl

    return _sycl


def _device_list(dpctl) -> str:
    return ", ".join(f"{d.filter_string} ({d.name})" for d in dpctl.get_devices()) or "none"


def _why_no_device() -> str:
    if _opencl_cpu_library() is None:
        return ("no SYCL device found: the OpenCL CPU runtime is not installed "
                "(pip install intel-opencl-rt==2026.2.0)")
    if _dpctl_imported_by_others:
        return ("no SYCL device found: dpctl was imported before polyvit could point the SYCL "
                "runtime at the OpenCL CPU runtime (`import ray` does that, for one). Set "
                f"OCL_ICD_FILENAMES={_opencl_cpu_library()} in the environment, or load the sycl "
                "backend (or call polyvit.backends.sycl_backend.prepare_environment()) before "
                "importing that package")
    return ("no SYCL device found although intel-opencl-rt is installed: OCL_ICD_FILENAMES is "
            f"{os.environ.get('OCL_ICD_FILENAMES')!r}; it must name its libintelocl.so and be "
            "set before dpctl is first imported (unset ONEAPI_DEVICE_SELECTOR if you set it)")


# The runtime rewrites these on every use (for its eviction policy); they are no program.
_VOLATILE = "_access_time.txt"


def _cache_files(folder: Path) -> dict[str, str]:
    """{path relative to folder: sha256} of every file the runtime keeps there."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(_VOLATILE):
            found[path.relative_to(folder).as_posix()] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return found


def _manifest(folder: Path) -> Path:
    return folder.with_name("manifest.json")


def _check_cache(folder: Path) -> None:
    """Discard the runtime's cache unless it holds exactly what the last build left there: the
    runtime trusts its files, and a truncated or foreign one fails deep inside it (or worse)."""
    present = _cache_files(folder) if folder.is_dir() else {}
    if not present:
        return
    try:
        recorded = json.loads(_manifest(folder).read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != present:
        if isinstance(recorded, dict):
            changed = sorted(k for k in set(recorded) | set(present)
                             if recorded.get(k) != present.get(k))
            why = f"{len(changed)} file(s) differ from what the last build wrote: {changed[0]}"
        else:
            why = "no readable manifest of what the last build wrote"
        _native.discard_entry(folder, why)
        _manifest(folder).unlink(missing_ok=True)


def _record_cache(folder: Path) -> None:
    """Write the manifest of the runtime's cache after a build that succeeded."""
    files = _cache_files(folder) if folder.is_dir() else {}
    target = _manifest(folder)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(files, indent=0, sort_keys=True))
    tmp.replace(target)


def _compiled_sources() -> set[str]:
    """The entries of the runtime's persistent cache of compiled SYCL source (none when the
    persistent cache is off)."""
    if os.environ.get("SYCL_CACHE_PERSISTENT") != "1" or not os.environ.get("SYCL_CACHE_DIR"):
        return set()
    folder = Path(os.environ["SYCL_CACHE_DIR"]) / "ext_kernel_compiler"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def _kernel_sources() -> tuple[dict[str, str], str]:
    """({header name: text}, every kernel .cpp file joined) from the installed sycl_kernels/."""
    folder = Path(_bridge().__file__).with_name("sycl_kernels")
    headers = {p.name: p.read_text() for p in sorted(folder.glob("*.hpp"))}
    source = "\n".join(p.read_text() for p in sorted(folder.glob("*.cpp")))
    return headers, source


# ---- device and programs -------------------------------------------------------------------------

class _DeviceState:
    """One device's in-order queue and its kernel programs (one per weight precision, built on
    first use), shared by every model on the device."""

    def __init__(self, dpctl, device) -> None:
        self.device = device
        self.queue = dpctl.SyclQueue(device, property="in_order")
        self.precisions = ("fp32", "bf16") + (("fp16",) if device.has_aspect_fp16 else ())
        self._programs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def program(self, precision: str = "fp32"):
        with self._lock:
            if precision not in self._programs:
                self._programs[precision] = self._build(precision)
            return self._programs[precision]

    def build_options(self, precision: str) -> list[str]:
        # the smallest sub-group: see POLYVIT_VEC_KERNEL in common.hpp
        options = [f"-DPOLYVIT_{name}={value}" for name, value in
                   (("VECTOR", VECTOR), ("PANEL", PANEL), ("ROWS", ROWS), ("QUERIES", QUERIES),
                    ("SUB_GROUP", min(self.device.sub_group_sizes)))]
        if precision != "fp32":
            options.append(f"-DPOLYVIT_WEIGHTS_{precision.upper()}")
        return options

    def _build(self, precision: str):
        """The program, through the persistent cache when this module manages it: one process
        builds while others wait for the lock, and a damaged cache is dropped and rebuilt."""
        folder = _managed_cache
        if folder is None:
            return self._compile(precision)
        with _native.build_lock(folder.parent):
            _check_cache(folder)
            try:
                program = self._compile(precision)
            except Exception as exc:  # the runtime fails in many ways on a file it wrote itself
                if not _cache_files(folder):
                    raise  # nothing cached: the sources or the device are at fault
                first = (str(exc).strip().splitlines() or [""])[0][:160]
                _native.discard_entry(folder, f"the kernel build from it failed: "
                                              f"{type(exc).__name__}: {first}")
                program = self._compile(precision)
            _record_cache(folder)
        return program

    def _compile(self, precision: str):
        headers, source = _kernel_sources()
        kernels = list(KERNELS) + [k + PANEL_SUFFIX[precision] for k in LINEAR_KERNELS.values()]
        options = self.build_options(precision)
        compiled = _compiled_sources()
        program = _bridge().Program(self.queue, source, headers, kernels, options)
        if _compiled_sources() - compiled:
            # This process compiled the source, and the runtime keyed the device code it cached
            # by the freshly compiled IR; later processes start from the cached IR and look the
            # device code up under another key. Building once more from the cached IR stores it
            # where they will find it, so only the first process on a machine pays the JIT.
            program = _bridge().Program(self.queue, source, headers, kernels, options)
        return program

    def alloc(self, nbytes: int):
        # 64-byte aligned: whole cache lines and aligned vector loads
        return _dpctl().memory.MemoryUSMDevice(max(int(nbytes), 4), alignment=64,
                                               queue=self.queue)

    def upload(self, array: np.ndarray):
        array = np.ascontiguousarray(array)
        mem = self.alloc(array.nbytes)
        mem.copy_from_host(array.reshape(-1).view(np.uint8))
        return mem

    def plan(self, precision: str = "fp32"):
        return _bridge().Plan(self.program(precision))


_states: dict[str, _DeviceState] = {}
_states_lock = threading.Lock()


def _default_device(dpctl):
    devices = dpctl.get_devices()
    if not devices:
        raise BackendError(_why_no_device())
    cpus = [d for d in devices if d.filter_string.startswith(DEFAULT_DEVICE)]
    return (cpus or [dpctl.select_default_device()])[0]


def device_state(device: str | None = None) -> _DeviceState:
    """The shared state of the device a SYCL filter string names (None: the OpenCL CPU device
    when there is one, else the runtime's default device)."""
    dpctl = _dpctl()
    if device is None:
        dev = _default_device(dpctl)
    else:
        try:
            dev = dpctl.SyclDevice(device)
        except Exception:  # dpctl raises SyclDeviceCreationError or ValueError
            raise BackendError(f"no SYCL device matches {device!r}; devices here: "
                               f"{_device_list(dpctl)}. Pass device= one of these filter "
                               "strings (backend:type:index, e.g. 'opencl:cpu:0')") from None
    if not _bridge().can_build_sycl(dev):
        raise BackendError(f"the SYCL device {dev.filter_string} ({dev.name}) cannot compile "
                           "SYCL source at run time; pick another with device=")
    key = dev.filter_string
    with _states_lock:
        if key not in _states:
            _states[key] = _DeviceState(dpctl, dev)
        return _states[key]


# ---- launches ------------------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _linear(plan, precision: str, epilogue: str, x, rows: int, weight, bias, out,
            n: int, k: int, residual=None) -> None:
    """out (rows, n) = x (rows, k) @ weight^T + bias, then the epilogue; weight as panels."""
    args = [x, weight, bias] + ([residual] if epilogue == "residual" else [])
    plan.add(LINEAR_KERNELS[epilogue] + PANEL_SUFFIX[precision],
             (_cdiv(n, PANEL), _cdiv(rows, ROWS)), (1, 1), args + [out, rows, n, k])


def attention_scratch(batch: int, tokens: int, queries: int, heads: int, head_dim: int) -> int:
    """Bytes of score scratch the attention kernel for this head dim needs."""
    if head_dim in VECTOR_HEAD_DIMS:
        return batch * heads * _cdiv(queries, QUERIES) * QUERIES * _cdiv(tokens, VECTOR) * VECTOR * 4
    return batch * heads * tokens * _cdiv(queries, LANES) * LANES * 4


def _attention(plan, q, q_stride: int, kv, kv_stride: int, out, scratch, batch: int,
               tokens: int, queries: int, heads: int, head_dim: int) -> None:
    """out (B, Q, D): the first `queries` queries of each image against all `tokens` keys."""
    args = [q, kv, out, scratch, tokens, queries, heads, q_stride, kv_stride]
    if head_dim in VECTOR_HEAD_DIMS:
        plan.add(f"attention_vec{head_dim}", (batch * heads, _cdiv(queries, QUERIES)), (1, 1),
                 args)
    else:
        plan.add("attention", (batch * heads, _cdiv(queries, LANES) * LANES), (1, LANES),
                 args + [head_dim])


def _rows(rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The launch of a row kernel: one work-group of LANES work-items per row."""
    return (rows, LANES), (1, LANES)


# ---- single ops ----------------------------------------------------------------------------------

class SyclOps(Ops):
    """The kernels one at a time on float32 numpy arrays, for the op-level tests. precision
    picks the GEMM's weight panels (fp32, or bf16/fp16 weights with fp32 compute)."""

    def __init__(self, precision: str = "fp32", device: str | None = None) -> None:
        super().__init__(precision)
        self.state = device_state(device)

    def _run(self, build, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        st = self.state
        mems = {k: st.alloc(v.nbytes) for k, v in inputs.items()}
        out = np.empty(out_shape, np.float32)
        mems["out"] = st.alloc(out.nbytes)
        plan = st.plan(self.precision)
        build(plan, mems)
        plan.run(st.queue, [(mems[k], v) for k, v in inputs.items()], [(mems["out"], out)])
        return out

    def _linear(self, x, weight, bias, epilogue, residual):
        (m, k), n = x.shape, weight.shape[0]
        inputs = {"x": x, "w": _native.pack_panels(weight, PANEL, self.precision),
                  "b": np.zeros(n, np.float32) if bias is None else bias}
        if residual is not None:
            inputs["r"] = residual

        def build(plan, mem):
            _linear(plan, self.precision, epilogue, mem["x"], m, mem["w"], mem["b"], mem["out"],
                    n, k, mem.get("r"))
        return self._run(build, inputs, (m, n))

    def _layernorm(self, x, weight, bias, eps):
        m, c = x.shape

        def build(plan, mem):
            plan.add("layernorm", *_rows(m), [mem["x"], mem["w"], mem["b"], mem["out"], c, eps])
        return self._run(build, {"x": x, "w": weight, "b": bias}, (m, c))

    def _attention(self, qkv, num_heads):
        b, t, three_d = qkv.shape
        d = three_d // 3
        scratch = self.state.alloc(attention_scratch(b, t, t, num_heads, d // num_heads))

        def build(plan, mem):
            _attention(plan, mem["qkv"], three_d, (mem["qkv"], d * 4), three_d, mem["out"],
                       scratch, b, t, t, num_heads, d // num_heads)
        return self._run(build, {"qkv": qkv}, (b, t, d))

    def _bias_gelu(self, x, bias, form):
        m, n = x.shape

        def build(plan, mem):
            plan.add(f"bias_gelu_{form}", (m, _cdiv(n, LANES) * LANES), (1, LANES),
                     [mem["x"], mem["b"], mem["out"], n])
        return self._run(build, {"x": x, "b": bias}, (m, n))

    def _patch_embed(self, images, weight, bias):
        b, c, s, _ = images.shape
        d, p = weight.shape[0], weight.shape[-1]
        n, pdim = (s // p) ** 2, c * p * p
        patches = self.state.alloc(b * n * pdim * 4)  # (B * N, C * P * P)
        unused = self.state.alloc(4)  # the patch norm's weights: not read without the norm
        inputs = {"images": images, "b": bias,
                  "w": _native.pack_panels(weight.reshape(d, pdim), PANEL, self.precision)}

        def build(plan, mem):
            plan.add("patch_im2col", *_rows(b * n),
                     [mem["images"], patches, unused, unused, c, s, p, 0, 1.0])
            _linear(plan, self.precision, "none", patches, b * n, mem["w"], mem["b"], mem["out"],
                    d, pdim)
        return self._run(build, inputs, (b, n, d))


# ---- the model -----------------------------------------------------------------------------------

def linear_layers(cfg: ViTConfig) -> dict[str, tuple[int, int]]:
    """{stem: (N, K)} of every linear layer, from the weight table: each 2-D or 4-D .weight."""
    return {name[:-len(".weight")]: (shape[0], int(np.prod(shape[1:])))
            for name, shape in expected_shapes(cfg).items()
            if name.endswith(".weight") and len(shape) >= 2}


class _Forward:
    """The buffers and recorded launches of the forward pass at one batch size. Every block but
    the last runs on all B * T tokens; the last one runs for the class token only: norm1, K and
    V over every token, the class token's query, and the rest on its B rows."""

    def __init__(self, model: "SyclBackend", batch: int) -> None:
        cfg, st, w, precision = model.config, model.state, model.weights, model.precision
        b, t, d, n = batch, cfg.num_tokens, cfg.embed_dim, cfg.num_patches
        heads, hidden, classes, hd = cfg.num_heads, cfg.mlp_dim, cfg.num_classes, cfg.head_dim
        eps = float(cfg.ln_eps)
        m = b * t
        f32 = 4
        self.images = st.alloc(b * cfg.in_chans * cfg.image_size ** 2 * f32)  # (B, C, S, S)
        patches = st.alloc(b * n * cfg.patch_dim * f32)                        # (B*N, C*P*P)
        proj = st.alloc(b * n * d * f32)                                       # (B*N, D)
        x = st.alloc(m * d * f32)                                              # (B, T, D)
        h = st.alloc(m * d * f32)                                              # (B, T, D)
        qkv = st.alloc(m * 3 * d * f32)                                        # (B, T, 3D)
        att = st.alloc(m * d * f32)                                            # (B, T, D)
        mlp = st.alloc(m * hidden * f32)                                       # (B, T, hidden)
        scores = st.alloc(attention_scratch(b, t, t, heads, hd))              # see attention.cpp
        # the last block's class rows: xc its residual stream, hc its norms and attention
        xc = st.alloc(b * d * f32)                                             # (B, D)
        hc = st.alloc(b * d * f32)                                             # (B, D)
        self.logits = st.alloc(b * classes * f32)                              # (B, classes)
        plan = st.plan(precision)

        def linear(src, rows, stem, dst, epilogue="none", part=""):
            n_out, k_in = model.shapes[stem + ".weight" + part]
            _linear(plan, precision, epilogue, src, rows, w[stem + ".weight" + part],
                    w[stem + ".bias" + part], dst, n_out, k_in,
                    dst if epilogue == "residual" else None)  # in place: see linear.cpp

        def norm(src, rows, stem, dst):
            plan.add("layernorm", *_rows(rows),
                     [src, w[stem + ".weight"], w[stem + ".bias"], dst, d, eps])

        plan.add("patch_im2col", *_rows(b * n),
                 [self.images, patches, w["patch_embed.norm_pre.weight"],
                  w["patch_embed.norm_pre.bias"], cfg.in_chans, cfg.image_size, cfg.patch_size,
                  int(cfg.patch_norm_pre), eps])
        linear(patches, b * n, "patch_embed.proj", proj)
        plan.add("embed_tokens", *_rows(m),
                 [proj, w["cls_token"], w["pos_embed"], x, w["patch_embed.norm.weight"],
                  w["patch_embed.norm.bias"], t, d, int(cfg.patch_norm_post), eps])
        for i in range(cfg.depth - 1):
            p = f"blocks.{i}."
            norm(x, m, p + "norm1", h)
            linear(h, m, p + "attn.qkv", qkv)
            _attention(plan, qkv, 3 * d, (qkv, d * f32), 3 * d, att, scores, b, t, t, heads, hd)
            linear(att, m, p + "attn.proj", x, "residual")
            norm(x, m, p + "norm2", h)
            linear(h, m, p + "mlp.fc1", mlp, f"gelu_{cfg.gelu}")
            linear(mlp, m, p + "mlp.fc2", x, "residual")
        # the last block: the head reads only the class token, so only its row goes on past
        # the attention, whose keys and values still come from every token
        p = f"blocks.{cfg.depth - 1}."
        norm(x, m, p + "norm1", h)
        linear(h, m, p + "attn.qkv", qkv, part=":kv")          # (B, T, 2D) in qkv's buffer
        plan.add("class_rows", *_rows(b), [h, hc, t, d])
        linear(hc, b, p + "attn.qkv", att, part=":q")          # (B, D) in att's buffer
        _attention(plan, att, d, qkv, 2 * d, hc, scores, b, t, 1, heads, hd)  # (B, D)
        plan.add("class_rows", *_rows(b), [x, xc, t, d])
        linear(hc, b, p + "attn.proj", xc, "residual")
        norm(xc, b, p + "norm2", hc)
        linear(hc, b, p + "mlp.fc1", mlp, f"gelu_{cfg.gelu}")
        linear(mlp, b, p + "mlp.fc2", xc, "residual")
        norm(xc, b, "norm", hc)
        linear(hc, b, "head", self.logits)
        self.plan = plan


class SyclBackend(Backend):
    name = "sycl"
    precisions = ("fp32", "bf16", "fp16")  # bf16/fp16: weights only; fp16 where the device has it
    option_specs = (device_option(
        r"[A-Za-z_*]+(:[A-Za-z_*]+)?(:[0-9]+)?", "'opencl:cpu', 'opencl:cpu:0' or 'level_zero:gpu'",
        None, "a SYCL filter string, backend:type:index (default: the OpenCL CPU device when "
        "there is one, else the runtime's default device)"),)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return _availability()

    @classmethod
    def supports(cls, precision: str, device: str | None = None) -> tuple[bool, str]:
        state = device_state(device)
        if precision not in state.precisions:
            return False, (f"the SYCL device {state.device.filter_string} "
                           f"({state.device.name}) has no {precision} support (no fp16 aspect); "
                           f"it runs: {', '.join(state.precisions)}")
        return True, ""

    @classmethod
    def make_ops(cls, precision: str, device: str | None = None) -> SyclOps:
        return SyclOps(precision, device)

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        super().__init__(config, weights, precision, **options)
        self.state = device_state(self.options["device"])
        self.device = self.state.device.filter_string
        self.shapes: dict[str, tuple[int, int]] = {}  # (N, K) of each weight stored as panels
        self.weights = self._upload(config, weights)
        self._forwards: _native.BatchCache[_Forward] = _native.BatchCache(
            lambda batch: _Forward(self, batch))
        self._lock = threading.Lock()

    def _upload(self, cfg: ViTConfig, weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Every weight on the device once, by its shared-format name: linear weights as GEMM
        panels, absent biases and patch norms as zeros and ones (their kernels then run
        unchanged, or skip them by flag). The last block's qkv is kept as its query part ":q"
        and its key-value part ":kv", which that block computes for different rows."""
        st = self.state
        f32 = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        for name, size in (("patch_embed.norm_pre", cfg.patch_dim),
                           ("patch_embed.norm", cfg.embed_dim)):
            f32.setdefault(name + ".weight", np.ones(size, np.float32))
            f32.setdefault(name + ".bias", np.zeros(size, np.float32))
        linears = linear_layers(cfg)
        for stem, (n, _) in linears.items():
            f32.setdefault(stem + ".bias", np.zeros(n, np.float32))
        panels = {stem + ".weight": shape for stem, shape in linears.items()}  # name: (N, K)
        last, d = f"blocks.{cfg.depth - 1}.attn.qkv", cfg.embed_dim
        qkv_weight, qkv_bias = f32.pop(last + ".weight"), f32.pop(last + ".bias")
        del panels[last + ".weight"]
        for part, rows in ((":q", slice(0, d)), (":kv", slice(d, 3 * d))):
            f32[last + ".weight" + part] = qkv_weight[rows]
            f32[last + ".bias" + part] = qkv_bias[rows]
            panels[last + ".weight" + part] = (rows.stop - rows.start, d)
        self.shapes = panels
        out = {}
        for name, value in f32.items():
            if name in panels:
                value = _native.pack_panels(value.reshape(panels[name]), PANEL, self.precision)
            out[name] = st.upload(value)
        return out

    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes whose buffers and recorded launches are kept, least recently used first."""
        return self._forwards.sizes()

    def clear_cache(self) -> None:
        self._forwards.clear()

    def forward(self, images: np.ndarray) -> np.ndarray:
        batch = images.shape[0]
        logits = np.empty((batch, self.config.num_classes), np.float32)
        fw = self._forwards.get(batch)
        with self._lock:  # one batch size's buffers serve one call at a time
            fw.plan.run(self.state.queue, [(fw.images, images)], [(fw.logits, logits)])
        return logits


# ---- availability --------------------------------------------------------------------------------

def _availability() -> tuple[bool, str]:
    """The packages, the bridge and an OpenCL runtime to find, checked without importing dpctl
    (availability must stay cheap); a device that still fails to appear is a clear error at
    load (see _why_no_device)."""
    if importlib.util.find_spec("dpctl") is None:
        return False, f"the sycl extra is not installed (dpctl is missing): {INSTALL}"
    if importlib.util.find_spec("polyvit._sycl") is None:
        return False, ("the SYCL bridge polyvit._sycl was not built: dpctl and intel-sycl-rt "
                       f"were not installed when polyvit was: {INSTALL}")
    icd = os.environ.get("OCL_ICD_FILENAMES")
    if icd is not None and not any(os.path.exists(p) for p in icd.split(":") if p):
        return False, _why_no_device()
    if icd is None and _opencl_cpu_library() is None and "ONEAPI_DEVICE_SELECTOR" not in os.environ:
        return False, _why_no_device()
    return True, ""
