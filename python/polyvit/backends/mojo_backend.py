"""Backend "mojo": the forward's kernels written in Mojo (mojo/*.mojo), compiled at first use by
the pinned mojo-compiler into a cache (see mojo_build), called through their C ABI with ctypes.

Threads: a ctypes call releases the GIL, so a small persistent team of Python threads calls the
same kernel once per thread id and each thread computes its share. A forward is one such call
per thread: the Mojo side runs every op and meets at a barrier between ops.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from . import mojo_build
from .base import LINEAR_EPILOGUES, Backend, check_images

ABI_VERSION = 1
MAX_THREADS = 1024
EPILOGUE_IDS = {"none": 0, "gelu_erf": 1, "gelu_tanh": 2, "residual": 3}
GELU_FORM_IDS = {"erf": 0, "tanh": 1}
WORKSPACES_KEPT = 4  # batch sizes whose activations stay allocated per model

# Each exported function's arguments (vit_forward.mojo and polyvit_mojo.mojo document them);
# every one is an integer except "eps" (float32). The names make the kernels' status readable.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "polyvit_abi_version": (),
    "polyvit_gemm_nr": (),
    "polyvit_attention_scratch_floats": ("t", "hd"),
    "polyvit_linear": ("epilogue", "x", "x_len", "weight", "weight_len", "bias", "bias_len",
                       "out", "out_len", "residual", "residual_len", "m", "n", "k", "tid",
                       "nthreads"),
    "polyvit_layernorm": ("x", "x_len", "weight", "weight_len", "bias", "bias_len", "out",
                          "out_len", "m", "c", "eps", "tid", "nthreads"),
    "polyvit_attention": ("qkv", "qkv_len", "out", "out_len", "scratch", "scratch_len", "b",
                          "t", "d", "heads", "tid", "nthreads"),
    "polyvit_bias_gelu": ("form", "x", "x_len", "bias", "bias_len", "out", "out_len", "m", "n",
                          "tid", "nthreads"),
    "polyvit_vit_workspace_floats": ("config", "config_len", "batch", "nthreads"),
    "polyvit_vit_forward": ("config", "config_len", "weights", "weights_len", "images",
                            "images_len", "logits", "logits_len", "workspace", "workspace_len",
                            "state", "state_len", "batch", "eps", "tid", "nthreads"),
}
STATUS_KINDS = {
    1: "a null address",
    2: "a dimension that is zero, negative, too large or inconsistent",
    3: "a buffer smaller than its dimensions need",
    4: "a thread index outside the team",
    5: "an unknown epilogue or GELU form",
    6: "an inconsistent config",
}


# ---- the kernels -------------------------------------------------------------------------------


class Kernels:
    """The loaded library: call(name, *ints) runs a kernel and turns its status into errors."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        for name, args in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_float if a == "eps" else ctypes.c_ssize_t for a in args]
            fn.restype = ctypes.c_ssize_t
        version = lib.polyvit_abi_version()
        if version != ABI_VERSION:
            raise BackendError(f"the Mojo kernel library speaks ABI {version}, this polyvit "
                               f"expects {ABI_VERSION}; clear the cache {mojo_build.cache_root()}")
        self.nr = int(lib.polyvit_gemm_nr())

    def call(self, name: str, *args: Any) -> int:
        status = getattr(self._lib, name)(*args)
        if status < 0:
            kind, position = divmod(-status, 100)
            names = SIGNATURES[name]
            arg = names[position - 1] if 0 < position <= len(names) else f"#{position}"
            raise BackendError(f"mojo kernel {name} rejected argument {arg!r}: "
                               f"{STATUS_KINDS.get(kind, f'status {status}')}")
        return status


_kernels: Kernels | None = None
_kernels_lock = threading.Lock()


def kernels() -> Kernels:
    """The kernels of this process, built (first use) and loaded once."""
    global _kernels
    with _kernels_lock:
        if _kernels is None:
            _kernels = Kernels(mojo_build.load_library())
        return _kernels


# ---- the thread team ---------------------------------------------------------------------------


class Team:
    """n - 1 persistent daemon threads plus the caller run fn(tid) for tid in 0..n-1.

    Calls are serialised: a forward already uses every thread, and its barrier needs every
    thread of one call running, not queued behind another call's.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._lock = threading.Lock()
        self._inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(n - 1)]
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        for tid, inbox in enumerate(self._inboxes, start=1):
            threading.Thread(target=self._work, args=(tid, inbox), daemon=True,
                             name=f"polyvit-mojo-{tid}").start()

    def _work(self, tid: int, inbox: queue.SimpleQueue) -> None:
        while True:
            fn = inbox.get()
            try:
                fn(tid)
                self._done.put(None)
            except BaseException as exc:  # handed to the caller, which re-raises it
                self._done.put(exc)

    def run(self, fn: Callable[[int], Any]) -> None:
        with self._lock:
            for inbox in self._inboxes:
                inbox.put(fn)
            error: BaseException | None = None
            try:
                fn(0)
            except BaseException as exc:
                error = exc
            pending = len(self._inboxes)
            while pending:
                try:
                    result = self._done.get()
                except BaseException as exc:  # e.g. Ctrl-C: the workers still write into the
                    error = error or exc      # caller's buffers, so wait for them first
                    continue
                pending -= 1
                if result is not None and error is None:
                    error = result
            if error is not None:
                raise error


_teams: dict[int, Team] = {}
_teams_lock = threading.Lock()


def team(n: int) -> Team:
    with _teams_lock:
        if n not in _teams:
            _teams[n] = Team(n)
        return _teams[n]


def _forget_teams() -> None:
    """A forked child has none of the parent's threads: it starts its own teams."""
    global _teams_lock
    _teams.clear()
    _teams_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_teams)


def default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_threads(threads: Any) -> int:
    if threads is None:
        return min(default_threads(), MAX_THREADS)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
            or not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return int(threads)


# ---- buffers -----------------------------------------------------------------------------------


def aligned_empty(count: int, dtype: Any = np.float32) -> np.ndarray:
    """A 1-D array whose data starts on a 64-byte boundary (a cache line, an AVX-512 vector)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(count * itemsize + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset:offset + count * itemsize].view(dtype)


def pack_weight(weight: np.ndarray, nr: int) -> np.ndarray:
    """(N, K) -> (ceil(N / nr), K, nr) panels, zero past N: the layout the GEMM tile reads."""
    n, k = weight.shape
    panels = -(-n // nr)
    padded = np.zeros((panels * nr, k), np.float32)
    padded[:n] = weight
    packed = aligned_empty(panels * k * nr)
    packed.reshape(panels, k, nr)[:] = padded.reshape(panels, nr, k).transpose(0, 2, 1)
    return packed


def pad_bias(bias: np.ndarray | None, n: int, nr: int) -> np.ndarray:
    """(N,) or None -> (ceil(N / nr) * nr,) zero padded: the GEMM adds whole vectors of it."""
    padded = aligned_empty(-(-n // nr) * nr)
    padded[:] = 0
    if bias is not None:
        padded[:n] = bias
    return padded


def flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def _address(a: np.ndarray) -> int:
    return a.ctypes.data


# ---- input checks of the single ops --------------------------------------------------------


def _array(name: str, a: Any, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{name} has dtype {a.dtype}, expected float32; "
                        f"pass {name}.astype(np.float32)")
    if a.ndim != ndim:
        raise ValueError(f"{name} has shape {a.shape}, expected {ndim} dimensions")
    if a.size == 0:
        raise ValueError(f"{name} has shape {a.shape}: it is empty")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous; pass np.ascontiguousarray({name})")
    return a


def _shape(name: str, a: np.ndarray, shape: tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape}")


class MojoOps:
    """The single ops on float32 numpy arrays, for the op-level parity harness."""

    def __init__(self, k: Kernels, threads: int | None = None) -> None:
        self._k = k
        self._team = team(resolve_threads(threads))

    def _run(self, name: str, *args: Any) -> None:
        n = self._team.n
        self._team.run(lambda tid: self._k.call(name, *args, tid, n))

    def linear(self, x, weight, bias, epilogue="none", residual=None):
        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")
        x = _array("x", x, 2)
        weight = _array("weight", weight, 2)
        m, k = x.shape
        n = weight.shape[0]
        if weight.shape[1] != k:
            raise ValueError(f"weight has shape {weight.shape}, expected (N, {k}) for x of "
                             f"shape {x.shape}")
        if bias is not None:
            _shape("bias", _array("bias", bias, 1), (n,))
        if epilogue == "residual":
            if residual is None:
                raise ValueError("epilogue 'residual' needs residual= of shape (M, N)")
            _shape("residual", _array("residual", residual, 2), (m, n))
        elif residual is not None:
            raise ValueError(f"residual= is only used by epilogue 'residual', not {epilogue!r}")
        packed = pack_weight(weight, self._k.nr)
        padded = pad_bias(bias, n, self._k.nr)
        out = np.empty((m, n), np.float32)
        res = residual if residual is not None else out
        self._run("polyvit_linear", EPILOGUE_IDS[epilogue], _address(x), x.size,
                  _address(packed), packed.size, _address(padded), padded.size, _address(out),
                  out.size, _address(res), res.size, m, n, k)
        return out

    def layernorm(self, x, weight, bias, eps):
        x = _array("x", x, 2)
        m, c = x.shape
        _shape("weight", _array("weight", weight, 1), (c,))
        _shape("bias", _array("bias", bias, 1), (c,))
        if not float(eps) > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        out = np.empty_like(x)
        self._run("polyvit_layernorm", _address(x), x.size, _address(weight), c, _address(bias),
                  c, _address(out), out.size, m, c, float(eps))
        return out

    def attention(self, qkv, num_heads):
        qkv = _array("qkv", qkv, 3)
        b, t, three_d = qkv.shape
        if three_d % 3:
            raise ValueError(f"qkv has shape {qkv.shape}: the last axis must be 3 * D")
        d = three_d // 3
        if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) \
                or num_heads <= 0 or d % num_heads:
            raise ValueError(f"num_heads must be a positive divisor of D = {d}, got {num_heads!r}")
        per_thread = self._k.call("polyvit_attention_scratch_floats", t, d // int(num_heads))
        scratch = aligned_empty(per_thread * self._team.n)
        out = np.empty((b, t, d), np.float32)
        self._run("polyvit_attention", _address(qkv), qkv.size, _address(out), out.size,
                  _address(scratch), scratch.size, b, t, d, int(num_heads))
        return out

    def bias_gelu(self, x, bias, form="erf"):
        if form not in GELU_FORM_IDS:
            raise ValueError(f"unknown GELU form {form!r}; one of {tuple(GELU_FORM_IDS)}")
        x = _array("x", x, 2)
        m, n = x.shape
        _shape("bias", _array("bias", bias, 1), (n,))
        out = np.empty_like(x)
        self._run("polyvit_bias_gelu", GELU_FORM_IDS[form], _address(x), x.size,
                  _address(bias), n, _address(out), out.size, m, n)
        return out


# ---- the backend -------------------------------------------------------------------------------


class MojoBackend(Backend):
    name = "mojo"
    precisions = ("fp32",)
    options = ("threads",)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            return mojo_build.availability()
        except Exception as exc:  # availability never raises
            return False, f"{type(exc).__name__}: {exc}"

    @classmethod
    def ops(cls) -> MojoOps:
        return MojoOps(kernels())

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", threads: int | None = None, **options: Any) -> None:
        if threads is not None:
            options["threads"] = threads
        super().__init__(config, weights, precision, **options)  # rejects unknown options
        from ..weights import as_float32, validate

        self._threads = resolve_threads(threads)
        self._k = kernels()
        weights = as_float32(weights)
        validate(config, weights)
        self._config = np.array(config_array(config), np.int64)
        self._keep, self._table = weight_table(config, weights, self._k.nr)
        self._eps = float(config.ln_eps)
        self._lock = threading.Lock()
        self._workspaces: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _workspace(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(activations, barrier words) for this batch size, kept for the next call."""
        if batch in self._workspaces:
            self._workspaces.move_to_end(batch)
        else:
            floats = self._k.call("polyvit_vit_workspace_floats", _address(self._config),
                                  self._config.size, batch, self._threads)
            self._workspaces[batch] = (aligned_empty(floats), aligned_empty(16, np.int64))
            while len(self._workspaces) > WORKSPACES_KEPT:
                self._workspaces.popitem(last=False)
        return self._workspaces[batch]

    def forward(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.config)
        batch = images.shape[0]
        logits = np.empty((batch, self.config.num_classes), np.float32)
        n = self._threads
        with self._lock:  # one forward per model at a time: they share the workspace
            ws, state = self._workspace(batch)
            state[:] = 0
            args = (_address(self._config), self._config.size, _address(self._table),
                    self._table.size, _address(images), images.size, _address(logits),
                    logits.size, _address(ws), ws.size, _address(state), state.size, batch,
                    self._eps)
            team(n).run(lambda tid: self._k.call("polyvit_vit_forward", *args, tid, n))
        return logits


def config_array(cfg: ViTConfig) -> list[int]:
    """The int64 config of vit_forward.mojo (CFG_* order)."""
    return [cfg.image_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.depth,
            cfg.num_heads, cfg.mlp_dim, cfg.num_classes, int(cfg.patch_norm_pre),
            int(cfg.patch_norm_post), int(cfg.gelu == "tanh")]


def weight_table(cfg: ViTConfig, w: Mapping[str, np.ndarray],
                 nr: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(arrays to keep alive, int64 (address, floats) pairs in vit_forward.mojo's WT_ order)."""
    d = cfg.embed_dim
    empty = np.zeros(0, np.float32)
    entries = [
        pack_weight(w["patch_embed.proj.weight"].reshape(d, -1), nr),
        pad_bias(w["patch_embed.proj.bias"], d, nr),
        flat(w["patch_embed.norm_pre.weight"]) if cfg.patch_norm_pre else empty,
        flat(w["patch_embed.norm_pre.bias"]) if cfg.patch_norm_pre else empty,
        flat(w["patch_embed.norm.weight"]) if cfg.patch_norm_post else empty,
        flat(w["patch_embed.norm.bias"]) if cfg.patch_norm_post else empty,
        flat(w["cls_token"]),
        flat(w["pos_embed"]),
    ]
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        entries += [
            flat(w[p + "norm1.weight"]), flat(w[p + "norm1.bias"]),
            pack_weight(w[p + "attn.qkv.weight"], nr),
            pad_bias(w.get(p + "attn.qkv.bias"), 3 * d, nr),
            pack_weight(w[p + "attn.proj.weight"], nr),
            pad_bias(w[p + "attn.proj.bias"], d, nr),
            flat(w[p + "norm2.weight"]), flat(w[p + "norm2.bias"]),
            pack_weight(w[p + "mlp.fc1.weight"], nr),
            pad_bias(w[p + "mlp.fc1.bias"], cfg.mlp_dim, nr),
            pack_weight(w[p + "mlp.fc2.weight"], nr),
            pad_bias(w[p + "mlp.fc2.bias"], d, nr),
        ]
    entries += [flat(w["norm.weight"]), flat(w["norm.bias"]),
                pack_weight(w["head.weight"], nr), pad_bias(w["head.bias"], cfg.num_classes, nr)]
    table = np.array([v for a in entries for v in (_address(a) if a.size else 0, a.size)],
                     np.int64)
    return entries, table
