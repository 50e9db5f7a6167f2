"""Backend "mojo": the forward's kernels written in Mojo (mojo/), compiled at first use by the
pinned mojo-compiler into a cache (see mojo_build), called through their C ABI with ctypes.

Threads: a ctypes call releases the GIL, so a small persistent team of Python threads calls the
same kernel once per thread id and each thread computes its share. A forward is one such call
per thread: the Mojo side runs every op and meets at a barrier between ops.

The weights reach Mojo as a table of (address, float count) pairs whose slots are the shared
format's tensor names in mojo_build.weight_slots() order; the Mojo constants naming the slots are
generated from that same table, and the kernels check the table against the config at load.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from typing import Any, Callable, Mapping

import numpy as np

from ..config import GELU_FORMS, ViTConfig
from ..errors import BackendError
from . import mojo_build
from ._native import BatchCache, aligned_empty, pack_panels, pad_vector
from .base import LINEAR_EPILOGUES, THREADS, Backend, Ops, check_images

# Each exported function's arguments (polyvit_mojo.mojo documents them); every one is an
# integer except "eps" (float32). The names make the kernels' statuses readable.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "polyvit_layout_hash": (),
    "polyvit_panel_width": (),
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
    "polyvit_patch_embed": ("images", "images_len", "weight", "weight_len", "bias", "bias_len",
                            "out", "out_len", "patches", "patches_len", "state", "state_len",
                            "b", "c", "h", "w", "p", "d", "tid", "nthreads"),
    "polyvit_vit_check_weights": ("config", "config_len", "weights", "weights_len"),
    "polyvit_vit_workspace_floats": ("config", "config_len", "batch", "nthreads"),
    "polyvit_vit_forward": ("config", "config_len", "weights", "weights_len", "images",
                            "images_len", "logits", "logits_len", "workspace", "workspace_len",
                            "state", "state_len", "batch", "tid", "nthreads"),
}
STATUS_KINDS = dict(enumerate(mojo_build.STATUS_KINDS.values(), start=1))


# ---- the kernels ------------------------------------------------------------------------------


class Kernels:
    """The loaded library: call(name, *ints) runs a kernel and turns its status into errors."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        for name, args in SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_float if a == "eps" else ctypes.c_ssize_t for a in args]
            fn.restype = ctypes.c_ssize_t
        self.nr = int(lib.polyvit_panel_width())  # the one definition is the kernels' NR

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


# ---- the thread team --------------------------------------------------------------------------


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


def _address(a: np.ndarray) -> int:
    return a.ctypes.data


# ---- the single ops ---------------------------------------------------------------------------


class MojoOps(Ops):
    """The single ops on float32 numpy arrays, checked by base.Ops, then at the C ABI."""

    def __init__(self, k: Kernels, threads: int) -> None:
        super().__init__("fp32")
        self._k = k
        self._team = team(threads)

    def _run(self, name: str, *args: Any) -> None:
        n = self._team.n
        self._team.run(lambda tid: self._k.call(name, *args, tid, n))

    def _linear(self, x, weight, bias, epilogue, residual):
        m, k = x.shape
        n = weight.shape[0]
        packed = pack_panels(weight, self._k.nr)
        padded = pad_vector(bias, n, self._k.nr)
        out = np.empty((m, n), np.float32)
        res = residual if residual is not None else out
        self._run("polyvit_linear", LINEAR_EPILOGUES.index(epilogue), _address(x), x.size,
                  _address(packed), packed.size, _address(padded), padded.size, _address(out),
                  out.size, _address(res), res.size, m, n, k)
        return out

    def _layernorm(self, x, weight, bias, eps):
        m, c = x.shape
        out = np.empty_like(x)
        self._run("polyvit_layernorm", _address(x), x.size, _address(weight), c, _address(bias),
                  c, _address(out), out.size, m, c, eps)
        return out

    def _attention(self, qkv, num_heads):
        b, t, three_d = qkv.shape
        d = three_d // 3
        per_thread = self._k.call("polyvit_attention_scratch_floats", t, d // num_heads)
        scratch = aligned_empty(per_thread * self._team.n)
        out = np.empty((b, t, d), np.float32)
        self._run("polyvit_attention", _address(qkv), qkv.size, _address(out), out.size,
                  _address(scratch), scratch.size, b, t, d, num_heads)
        return out

    def _bias_gelu(self, x, bias, form):
        m, n = x.shape
        out = np.empty_like(x)
        self._run("polyvit_bias_gelu", GELU_FORMS.index(form), _address(x), x.size,
                  _address(bias), n, _address(out), out.size, m, n)
        return out

    def _patch_embed(self, images, weight, bias):
        b, c, h, w = images.shape
        d, p = weight.shape[0], weight.shape[-1]
        rows, cpp = b * (h // p) * (w // p), c * p * p
        packed = pack_panels(weight.reshape(d, cpp), self._k.nr)
        padded = pad_vector(bias, d, self._k.nr)
        patches = aligned_empty(rows * cpp)  # im2col's rows, read by the projection
        state = np.zeros(2, np.int64)  # the barrier between the two
        out = np.empty((b, rows // b, d), np.float32)
        self._run("polyvit_patch_embed", _address(images), images.size, _address(packed),
                  packed.size, _address(padded), padded.size, _address(out), out.size,
                  _address(patches), patches.size, _address(state), state.size, b, c, h, w, p, d)
        return out


# ---- the backend ------------------------------------------------------------------------------


class MojoBackend(Backend):
    name = "mojo"
    precisions = ("fp32",)
    option_specs = (THREADS,)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            return mojo_build.availability()
        except Exception as exc:  # availability never raises
            return False, f"{type(exc).__name__}: {exc}"

    @classmethod
    def make_ops(cls, precision: str, threads: int) -> MojoOps:
        return MojoOps(kernels(), threads)

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        super().__init__(config, weights, precision, **options)
        from ..weights import as_float32

        self._threads = self.options["threads"]
        self._k = kernels()
        weights = as_float32(weights)  # no copy: polyvit.load validated and converted them
        self._config = mojo_build.config_array(config)
        self._keep, self._table = weight_table(config, weights, self._k.nr)
        self._k.call("polyvit_vit_check_weights", _address(self._config), self._config.size,
                     _address(self._table), self._table.size)
        self._lock = threading.Lock()
        self._workspaces: BatchCache[tuple[np.ndarray, np.ndarray]] = \
            BatchCache(self._workspace)

    def _workspace(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(activations, barrier words) for this batch size."""
        floats = self._k.call("polyvit_vit_workspace_floats", _address(self._config),
                              self._config.size, batch, self._threads)
        return aligned_empty(floats), aligned_empty(16, np.int64)

    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes whose workspace is kept, least recently used first."""
        return self._workspaces.sizes()

    def clear_cache(self) -> None:
        self._workspaces.clear()

    def forward(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images, self.config)
        batch = images.shape[0]
        logits = np.empty((batch, self.config.num_classes), np.float32)
        n = self._threads
        with self._lock:  # one forward per model at a time: they share the workspace
            ws, state = self._workspaces.get(batch)
            state[:] = 0
            args = (_address(self._config), self._config.size, _address(self._table),
                    self._table.size, _address(images), images.size, _address(logits),
                    logits.size, _address(ws), ws.size, _address(state), state.size, batch)
            team(n).run(lambda tid: self._k.call("polyvit_vit_forward", *args, tid, n))
        return logits


def weight_table(cfg: ViTConfig, w: Mapping[str, np.ndarray],
                 nr: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(arrays to keep alive, int64 (address, floats) pairs), one pair per slot of
    mojo_build.weight_slots(): a linear op's weight packed in panels of nr columns and its bias
    padded to match, every other tensor flat, an absent optional tensor an empty slot."""
    first, block, last = mojo_build.weight_slots()
    names = [*first, *(f"blocks.{i}.{n}" for i in range(cfg.depth) for n in block), *last]
    linear = mojo_build.linear_weights()
    entries = []
    for name in names:
        local = name.split(".", 2)[2] if name.startswith("blocks.") else name
        stem = local.rpartition(".")[0]
        if name not in w:
            entries.append(np.zeros(0, np.float32))
        elif local in linear:
            entries.append(pack_panels(w[name].reshape(w[name].shape[0], -1), nr))
        elif stem + ".weight" in linear:  # the bias of a linear op
            entries.append(pad_vector(w[name], w[name].shape[0], nr))
        else:
            entries.append(w[name].reshape(-1))
    table = np.array([v for a in entries for v in (_address(a) if a.size else 0, a.size)],
                     np.int64)
    return entries, table
