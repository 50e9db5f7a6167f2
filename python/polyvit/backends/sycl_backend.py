"""Backend "sycl": SYCL C++ kernels (sycl/kernels/) compiled at run time by the SYCL runtime's
kernel compiler and launched through dpctl, on any SYCL device (the OpenCL CPU device by default).

How it fits together:
- polyvit._sycl, a small pybind11 bridge, builds the kernel sources into a kernel bundle for the
  device (a JIT of a few seconds, then cached on disk, see cache_dir) and replays recorded
  launches on dpctl.memory USM buffers with the GIL released.
- This module owns every shape: it packs the weights once, uploads them once, and records for
  each batch size one plan of launches (the whole forward pass) over preallocated buffers.

The SYCL runtime reads its environment when dpctl loads, so _dpctl() sets OCL_ICD_FILENAMES
(where the pip-installed OpenCL CPU runtime is) and the persistent kernel cache first, unless the
user set them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from .base import LINEAR_EPILOGUES, Backend

INSTALL = ('pip install dpctl==0.22.1 intel-sycl-rt==2026.2.0 intel-opencl-rt==2026.2.0 '
           '(the sycl extra), then reinstall polyvit so that its SYCL bridge is built; see '
           'docs/backends/sycl.md')
DEFAULT_DEVICE = "opencl:cpu"

LANES = 16  # work-items per group of the row kernels (LayerNorm, patches, GELU)
# The GEMM's packed-weight panel width and rows per work-item: PANEL and ROWS of
# sycl/kernels/linear.cpp.
PANEL = 64
ROWS = 4

LINEAR_KERNELS = {"none": "linear_bias", "gelu_erf": "linear_bias_gelu_erf",
                  "gelu_tanh": "linear_bias_gelu_tanh", "residual": "linear_bias_residual"}
# The GEMM's weight panels per precision: (kernel name suffix, numpy storage dtype)
PANELS = {"fp32": ("", np.float32), "bf16": ("_bf16", np.uint16), "fp16": ("_fp16", np.float16)}
KERNELS = ("bias_gelu_erf", "bias_gelu_tanh", "layernorm", "attention", "attention_vec16",
           "attention_vec32", "attention_vec64", "patch_im2col", "embed_tokens",
           "class_token_norm")


# ---- environment, device and program -----------------------------------------------------------

def cache_dir() -> Path:
    """Where the SYCL runtime keeps compiled kernels between processes."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "polyvit" / "sycl"


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


def _dpctl():
    """Import dpctl after setting what the SYCL runtime reads at load time (unless set)."""
    global _dpctl_module
    with _env_lock:
        if _dpctl_module is None:
            if "OCL_ICD_FILENAMES" not in os.environ:
                library = _opencl_cpu_library()
                if library:
                    os.environ["OCL_ICD_FILENAMES"] = library
            if "SYCL_CACHE_PERSISTENT" not in os.environ and "SYCL_CACHE_DIR" not in os.environ:
                try:
                    cache_dir().mkdir(parents=True, exist_ok=True)
                    os.environ["SYCL_CACHE_PERSISTENT"] = "1"
                    os.environ["SYCL_CACHE_DIR"] = str(cache_dir())
                except OSError:
                    pass  # no writable cache: every process pays the JIT, nothing breaks
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
    return ("no SYCL device found although intel-opencl-rt is installed: OCL_ICD_FILENAMES is "
            f"{os.environ.get('OCL_ICD_FILENAMES')!r}; it must name its libintelocl.so and be "
            "set before dpctl is first imported (unset ONEAPI_DEVICE_SELECTOR if you set it)")


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

    def _build(self, precision: str):
        headers, source = _kernel_sources()
        suffix = PANELS[precision][0]
        options = [f"-DPOLYVIT_SUB_GROUP={min(self.device.sub_group_sizes)}"]  # see common.hpp
        if precision != "fp32":
            options.append(f"-DPOLYVIT_WEIGHTS_{precision.upper()}")
        kernels = list(KERNELS) + [k + suffix for k in LINEAR_KERNELS.values()]
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


_states: dict[str, _DeviceState] = {}
_states_lock = threading.Lock()


def _default_device(dpctl):
    devices = dpctl.get_devices()
    if not devices:
        raise BackendError(_why_no_device())
    cpus = [d for d in devices if d.filter_string.startswith(DEFAULT_DEVICE)]
    return (cpus or [dpctl.select_default_device()])[0]


def device_state(device: str | None = None) -> _DeviceState:
    """The shared state of the device a SYCL filter string names (None: the default device)."""
    dpctl = _dpctl()
    if device is None:
        dev = _default_device(dpctl)
    else:
        if not isinstance(device, str):
            raise TypeError(f"device must be a SYCL filter string such as 'opencl:cpu', "
                            f"got {type(device).__name__}")
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


# ---- shapes and packing --------------------------------------------------------------------------

def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def pack_panels(weight: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """(N, K) -> (ceil(N / 64), K, 64): column panels, zero padded, as linear.cpp reads them,
    in the precision's storage type (bf16 as uint16 bits, rounded to nearest even)."""
    n, k = weight.shape
    padded = np.zeros((_cdiv(n, PANEL) * PANEL, k), np.float32)
    padded[:n] = weight
    panels = np.ascontiguousarray(padded.reshape(-1, PANEL, k).transpose(0, 2, 1))
    if precision == "bf16":
        bits = panels.view(np.uint32)
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return panels.astype(PANELS[precision][1], copy=False)


def _linear_launch(m: int, n: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return (_cdiv(n, PANEL), _cdiv(m, ROWS)), (1, 1)


QUERIES = 4  # queries per work-item of attention_vec (QB in sycl/kernels/attention.cpp)


def attention_scratch(batch: int, tokens: int, heads: int) -> int:
    """Bytes of score scratch either attention kernel needs."""
    return batch * heads * _cdiv(tokens, QUERIES) * QUERIES * _cdiv(tokens, LANES) * LANES * 4


def _attention_launch(plan, qkv, out, scratch, batch: int, tokens: int, heads: int,
                      head_dim: int) -> None:
    if head_dim in (16, 32, 64):
        plan.add(f"attention_vec{head_dim}", (batch * heads, _cdiv(tokens, QUERIES)), (1, 1),
                 [qkv, out, scratch, tokens, heads])
    else:
        plan.add("attention", (batch * heads, _cdiv(tokens, LANES) * LANES), (1, LANES),
                 [qkv, out, scratch, tokens, heads, head_dim])


def _row_launch(rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return (rows, LANES), (1, LANES)


def _check(name: str, a: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """a as a C-contiguous float32 array of `shape` (None: any size), or a clear error."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name} has dtype {a.dtype}, expected float32")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} has shape {a.shape}, expected ({want})")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return np.ascontiguousarray(a)


def _check_precision(state: _DeviceState, precision: str) -> str:
    if precision not in PANELS:
        raise BackendError(f"backend 'sycl' does not offer precision {precision!r}; it offers: "
                           f"{', '.join(PANELS)}")
    if precision not in state.precisions:
        raise BackendError(f"the SYCL device {state.device.filter_string} has no {precision} "
                           f"support; it offers: {', '.join(state.precisions)}")
    return precision


# ---- single ops ------------------------------------------------------------------------------------

class SyclOps:
    """The kernels one at a time on float32 numpy arrays, for the op-level parity harness.
    precision picks the GEMM's weight panels (fp32, or bf16/fp16 weights with fp32 compute)."""

    def __init__(self, device: str | None = None, precision: str = "fp32") -> None:
        self.state = device_state(device)
        self.precision = _check_precision(self.state, precision)

    def _run(self, build, inputs: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        st = self.state
        mems = {k: st.alloc(v.nbytes) for k, v in inputs.items()}
        out = np.empty(out_shape, np.float32)
        mems["out"] = st.alloc(out.nbytes)
        plan = st.plan(self.precision)
        build(plan, mems)
        plan.run(st.queue, [(mems[k], v) for k, v in inputs.items()], [(mems["out"], out)])
        return out

    def linear(self, x, weight, bias, epilogue="none", residual=None):
        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")
        x = _check("x", x, (None, None))
        m, k = x.shape
        weight = _check("weight", weight, (None, k))
        n = weight.shape[0]
        bias = np.zeros(n, np.float32) if bias is None else _check("bias", bias, (n,))
        if (epilogue == "residual") != (residual is not None):
            raise ValueError("residual is needed by, and only by, the 'residual' epilogue")
        inputs = {"x": x, "w": pack_panels(weight, self.precision), "b": bias}
        if residual is not None:
            inputs["r"] = _check("residual", residual, (m, n))

        def build(plan, mem):
            args = [mem["x"], mem["w"], mem["b"]] + ([mem["r"]] if residual is not None else [])
            plan.add(LINEAR_KERNELS[epilogue] + PANELS[self.precision][0],
                     *_linear_launch(m, n), args + [mem["out"], m, n, k])
        return self._run(build, inputs, (m, n))

    def layernorm(self, x, weight, bias, eps):
        x = _check("x", x, (None, None))
        m, c = x.shape
        inputs = {"x": x, "w": _check("weight", weight, (c,)), "b": _check("bias", bias, (c,))}

        def build(plan, mem):
            plan.add("layernorm", *_row_launch(m),
                     [mem["x"], mem["w"], mem["b"], mem["out"], c, float(eps)])
        return self._run(build, inputs, (m, c))

    def attention(self, qkv, num_heads):
        qkv = _check("qkv", qkv, (None, None, None))
        b, t, three_d = qkv.shape
        if three_d % 3 or (three_d // 3) % num_heads:
            raise ValueError(f"qkv last axis {three_d} is not 3 * D with D divisible by "
                             f"num_heads {num_heads}")
        d = three_d // 3
        scratch = self.state.alloc(attention_scratch(b, t, num_heads))

        def build(plan, mem):
            _attention_launch(plan, mem["qkv"], mem["out"], scratch, b, t, num_heads,
                              d // num_heads)
        return self._run(build, {"qkv": qkv}, (b, t, d))

    def bias_gelu(self, x, bias, form="erf"):
        if form not in ("erf", "tanh"):
            raise ValueError(f"unknown GELU form {form!r}; one of ('erf', 'tanh')")
        x = _check("x", x, (None, None))
        m, n = x.shape
        inputs = {"x": x, "b": _check("bias", bias, (n,))}

        def build(plan, mem):
            plan.add(f"bias_gelu_{form}", (m, _cdiv(n, LANES) * LANES), (1, LANES),
                     [mem["x"], mem["b"], mem["out"], n])
        return self._run(build, inputs, (m, n))


# ---- the model -------------------------------------------------------------------------------------

class _Forward:
    """The buffers and recorded launches of the forward pass at one batch size."""

    def __init__(self, model: "SyclBackend", batch: int) -> None:
        cfg, st, w = model.config, model.state, model.weights
        b, t, d, n = batch, cfg.num_tokens, cfg.embed_dim, cfg.num_patches
        heads, hidden, classes = cfg.num_heads, cfg.mlp_dim, cfg.num_classes
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
        scores = st.alloc(attention_scratch(b, t, heads))                      # (B*H, T, Tpad)
        cls = st.alloc(b * d * f32)                                            # (B, D)
        self.logits = st.alloc(b * classes * f32)                              # (B, classes)
        plan = st.plan(model.precision)

        def linear(src, rows, name, dst, epilogue="none"):
            n_out, k_in = model.shapes[name]
            args = [src, w[name + ".weight"], w[name + ".bias"]]
            if epilogue == "residual":
                args.append(dst)  # in place: each element is read, then written, by one item
            plan.add(LINEAR_KERNELS[epilogue] + PANELS[model.precision][0],
                     *_linear_launch(rows, n_out), args + [dst, rows, n_out, k_in])

        plan.add("patch_im2col", *_row_launch(b * n),
                 [self.images, patches, w["patch_embed.norm_pre.weight"],
                  w["patch_embed.norm_pre.bias"], cfg.in_chans, cfg.image_size, cfg.patch_size,
                  int(cfg.patch_norm_pre), eps])
        linear(patches, b * n, "patch_embed.proj", proj)
        plan.add("embed_tokens", *_row_launch(m),
                 [proj, w["cls_token"], w["pos_embed"], x, w["patch_embed.norm.weight"],
                  w["patch_embed.norm.bias"], t, d, int(cfg.patch_norm_post), eps])
        for i in range(cfg.depth):
            p = f"blocks.{i}."
            plan.add("layernorm", *_row_launch(m),
                     [x, w[p + "norm1.weight"], w[p + "norm1.bias"], h, d, eps])
            linear(h, m, p + "attn.qkv", qkv)
            _attention_launch(plan, qkv, att, scores, b, t, heads, cfg.head_dim)
            linear(att, m, p + "attn.proj", x, "residual")
            plan.add("layernorm", *_row_launch(m),
                     [x, w[p + "norm2.weight"], w[p + "norm2.bias"], h, d, eps])
            linear(h, m, p + "mlp.fc1", mlp, f"gelu_{cfg.gelu}")
            linear(mlp, m, p + "mlp.fc2", x, "residual")
        plan.add("class_token_norm", *_row_launch(b),
                 [x, w["norm.weight"], w["norm.bias"], cls, t, d, eps])
        linear(cls, b, "head", self.logits)
        self.plan = plan


class SyclBackend(Backend):
    name = "sycl"
    precisions = ("fp32", "bf16", "fp16")  # bf16/fp16: weights only; fp16 where the device has it
    options = ("device",)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        return _availability()

    @classmethod
    def ops(cls) -> SyclOps:
        return SyclOps()

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", device: str | None = None) -> None:
        options = {} if device is None else {"device": device}
        super().__init__(config, weights, precision, **options)
        self.state = device_state(device)
        _check_precision(self.state, precision)
        self.device = self.state.device.filter_string
        self.shapes: dict[str, tuple[int, int]] = {}
        self.weights = self._upload(config, weights)
        self._forwards: dict[int, _Forward] = {}
        self._lock = threading.Lock()

    def _upload(self, cfg: ViTConfig, weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Every weight on the device once: linear weights as GEMM panels, absent biases and
        patch norms as zeros (their kernels then run unchanged, or skip them by flag)."""
        st = self.state
        f32 = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        d, pdim = cfg.embed_dim, cfg.patch_dim
        f32["patch_embed.proj.weight"] = f32["patch_embed.proj.weight"].reshape(d, pdim)
        for name, size in (("patch_embed.norm_pre", pdim), ("patch_embed.norm", d)):
            f32.setdefault(name + ".weight", np.ones(size, np.float32))
            f32.setdefault(name + ".bias", np.zeros(size, np.float32))
        linears = ["patch_embed.proj", "head"] + [f"blocks.{i}.{n}" for i in range(cfg.depth)
                                                  for n in ("attn.qkv", "attn.proj", "mlp.fc1",
                                                            "mlp.fc2")]
        out = {}
        for name, value in f32.items():
            stem = name.rsplit(".", 1)[0]
            if stem in linears and name.endswith(".weight"):
                self.shapes[stem] = value.shape
                out[name] = st.upload(pack_panels(value, self.precision))
            else:
                out[name] = st.upload(value)
        for stem in linears:
            if stem + ".bias" not in out:
                out[stem + ".bias"] = st.upload(np.zeros(self.shapes[stem][0], np.float32))
        return out

    def forward(self, images: np.ndarray) -> np.ndarray:
        batch = images.shape[0]
        logits = np.empty((batch, self.config.num_classes), np.float32)
        with self._lock:
            fw = self._forwards.get(batch)
            if fw is None:
                if len(self._forwards) >= 4:  # a few batch sizes' buffers, not every one seen
                    self._forwards.pop(next(iter(self._forwards)))
                fw = self._forwards[batch] = _Forward(self, batch)
            fw.plan.run(self.state.queue, [(fw.images, images)], [(fw.logits, logits)])
        return logits


# ---- availability ------------------------------------------------------------------------------------

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
