"""The backend contract: options declared per backend and parsed here, the single ops every
backend exposes (checked here, computed by the backend), and the image checks of forward().

A backend is a class registered by name in polyvit.backends. It must be cheap to import: heavy
modules (torch, a native extension's dependencies) load in availability() probes or __init__.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..config import GELU_FORMS, ViTConfig
from ..errors import BackendError
from ._native import check_array, default_threads

LINEAR_EPILOGUES = ("none", "gelu_erf", "gelu_tanh", "residual")
MAX_THREADS = 1024


# ---- options -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One keyword option of a backend. parse(value) returns the value the backend uses, or
    raises ValueError/TypeError; `accepts` says in words what is accepted, for the error."""
    name: str
    accepts: str
    default: Any
    parse: Callable[[Any], Any]
    help: str = ""

    def resolve(self, backend: str, value: Any) -> Any:
        try:
            return self.parse(value)
        except (ValueError, TypeError):
            raise BackendError(f"backend {backend!r}: {self.name}={value!r} is not accepted; "
                               f"{self.name} takes {self.accepts}") from None

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _positive_int(value: Any, limit: int = MAX_THREADS) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 1 <= int(value) <= limit:
        raise ValueError(value)
    return int(value)


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(value)
        return value
    return parse


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


THREADS = Option("threads", f"an integer from 1 to {MAX_THREADS}", default_threads,
                 _positive_int, "worker threads (default: OMP_NUM_THREADS, else every core "
                 "this process may run on)")


def choice_option(name: str, choices: tuple[str, ...], default: str, help: str = "") -> Option:
    return Option(name, "one of " + ", ".join(repr(c) for c in choices), default,
                  _one_of(choices), help)


def flag_option(name: str, default: bool, help: str = "") -> Option:
    return Option(name, "True or False", default, _boolean, help)


def device_option(pattern: str, examples: str, default: str | None, help: str = "") -> Option:
    """A device named by a string, the same type on every backend; pattern is the regular
    expression a name must match in full, examples are shown in the error."""
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(pattern, value.strip()):
            raise ValueError(value)
        return value.strip()
    return Option("device", f"a device string such as {examples}", default, parse, help)


def cuda_device_option(help: str) -> Option:
    """The device option of the backends that run on CUDA devices: "0", "cuda:0" or "cuda"."""
    return device_option(r"(cuda(:\d+)?|\d+)", "'0' or 'cuda:0'", "cuda:0", help)


def cuda_device_index(device: str) -> int:
    """The CUDA device index a parsed device string names: "3" and "cuda:3" -> 3, "cuda" -> 0."""
    return int(device.rpartition(":")[2]) if device != "cuda" else 0


def missing_cuda_device(backend: str, device: str, count: int) -> str | None:
    """Why `device` cannot be used on a machine with `count` CUDA devices, or None."""
    if cuda_device_index(device) < count:
        return None
    return (f"backend {backend!r}: device {device!r} does not exist; this machine has {count} "
            f"CUDA device{'s' if count != 1 else ''}"
            + (f" (cuda:0 to cuda:{count - 1})" if count else ""))


# ---- the single ops ------------------------------------------------------------------------------

class Ops:
    """A backend's single ops, float32 numpy in and out (float64 for the oracle, the torch
    backend's fp64 ops), for the op-level tests. The public
    methods check their arguments here, the same way for every backend, then call the
    backend's _linear/_layernorm/... with checked, C-contiguous float32 arrays.

    linear:      x (M, K), weight (N, K), bias (N,) or None -> (M, N) = x @ weight.T + bias,
                 then the epilogue: "none", "gelu_erf", "gelu_tanh", or "residual" (+ residual).
    layernorm:   x (M, C), weight (C,), bias (C,), eps > 0 -> (M, C).
    attention:   qkv (B, T, 3D) packed q|k|v, heads dividing D -> (B, T, D).
    bias_gelu:   x (M, N), bias (N,) -> gelu(x + bias), form "erf" or "tanh".
    patch_embed: images (B, C, H, W), weight (D, C, P, P), bias (D,) -> (B, H/P * W/P, D):
                 im2col in (c, ph, pw) order, then the linear projection.
    """

    dtype: Any = np.float32  # of every array in and out

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision

    def _check(self, name: str, a: Any, shape: tuple[int | None, ...]) -> np.ndarray:
        return check_array(name, a, shape, self.dtype)

    def linear(self, x, weight, bias, epilogue: str = "none", residual=None) -> np.ndarray:
        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")
        x = self._check("x", x, (None, None))
        m, k = x.shape
        weight = self._check("weight", weight, (None, k))
        n = weight.shape[0]
        if bias is not None:
            bias = self._check("bias", bias, (n,))
        if (epilogue == "residual") != (residual is not None):
            raise ValueError("residual= of shape (M, N) is needed by, and only by, the "
                             f"'residual' epilogue (epilogue is {epilogue!r})")
        if residual is not None:
            residual = self._check("residual", residual, (m, n))
        return self._linear(x, weight, bias, epilogue, residual)

    def layernorm(self, x, weight, bias, eps: float) -> np.ndarray:
        x = self._check("x", x, (None, None))
        c = x.shape[1]
        weight = self._check("weight", weight, (c,))
        bias = self._check("bias", bias, (c,))
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) \
                or not float(eps) > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        return self._layernorm(x, weight, bias, float(eps))

    def attention(self, qkv, num_heads: int) -> np.ndarray:
        qkv = self._check("qkv", qkv, (None, None, None))
        if qkv.shape[2] % 3:
            raise ValueError(f"qkv has shape {qkv.shape}: its last axis must be 3 * D")
        d = qkv.shape[2] // 3
        if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) \
                or num_heads <= 0 or d % num_heads:
            raise ValueError(f"num_heads must be a positive divisor of D = {d}, "
                             f"got {num_heads!r}")
        return self._attention(qkv, int(num_heads))

    def bias_gelu(self, x, bias, form: str = "erf") -> np.ndarray:
        if form not in GELU_FORMS:
            raise ValueError(f"unknown GELU form {form!r}; one of {GELU_FORMS}")
        x = self._check("x", x, (None, None))
        bias = self._check("bias", bias, (x.shape[1],))
        return self._bias_gelu(x, bias, form)

    def patch_embed(self, images, weight, bias) -> np.ndarray:
        images = self._check("images", images, (None, None, None, None))
        c, h, w = images.shape[1:]
        weight = self._check("weight", weight, (None, c, None, None))
        d, _, p, p2 = weight.shape
        if p != p2 or h % p or w % p:
            raise ValueError(f"weight has shape {weight.shape}: patches must be square and tile "
                             f"the {h}x{w} images")
        bias = self._check("bias", bias, (d,))
        return self._patch_embed(images, weight, bias)

    # The backend's computations, on checked arguments.
    def _linear(self, x, weight, bias, epilogue, residual) -> np.ndarray:
        raise NotImplementedError

    def _layernorm(self, x, weight, bias, eps) -> np.ndarray:
        raise NotImplementedError

    def _attention(self, qkv, num_heads) -> np.ndarray:
        raise NotImplementedError

    def _bias_gelu(self, x, bias, form) -> np.ndarray:
        raise NotImplementedError

    def _patch_embed(self, images, weight, bias) -> np.ndarray:
        raise NotImplementedError


# ---- the backend ---------------------------------------------------------------------------------

class Backend:
    """Base of every backend. Subclasses set the class attributes, implement availability(),
    forward() and make_ops(), and read their parsed options from self.options."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]  # the first one is the parity precision
    option_specs: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, "") or (False, why not and what to do). Never raises."""
        raise NotImplementedError

    @classmethod
    def supports(cls, precision: str, **options: Any) -> tuple[bool, str]:
        """(True, "") when this machine runs `precision` with these options, else (False, why).
        Only called for an available backend and one of its precisions."""
        return True, ""

    @classmethod
    def timeable(cls) -> tuple[bool, str]:
        """(False, why) when timing this available backend here would not time its kernels (an
        interpreter runs them); vit-bench leaves it out. Never raises."""
        return True, ""

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(o.name for o in cls.option_specs)

    @classmethod
    def check_arguments(cls, precision: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options with defaults filled in (an option given as None takes its default) and
        values parsed; BackendError unless this backend offers `precision` and takes every
        option with its value."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            accepted = ", ".join(cls.option_names()) or "none"
            raise BackendError(f"backend {cls.name!r} has no option "
                               f"{', '.join(map(repr, unknown))}; its options: {accepted}")
        if precision not in cls.precisions:
            raise BackendError(f"backend {cls.name!r} does not offer precision {precision!r}; "
                               f"it offers: {', '.join(cls.precisions)}")
        return {o.name: o.default_value() if options.get(o.name) is None
                else o.resolve(cls.name, options[o.name]) for o in cls.option_specs}

    @classmethod
    def ops(cls, precision: str = "fp32", **options: Any) -> Ops:
        """This backend's single ops in `precision`, for the op-level tests."""
        parsed = cls.check_arguments(precision, options)
        ok, why = cls.supports(precision, **parsed)
        if not ok:
            raise BackendError(why)
        return cls.make_ops(precision, **parsed)

    @classmethod
    def make_ops(cls, precision: str, **options: Any) -> Ops:
        raise NotImplementedError

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        self.options = self.check_arguments(precision, options)
        ok, why = self.supports(precision, **self.options)
        if not ok:
            raise BackendError(why)
        self.config = config
        self.precision = precision

    def forward(self, images: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32, checked by check_images -> (B, num_classes) float32 logits."""
        raise NotImplementedError

    def attention_maps(self, images: np.ndarray) -> list[np.ndarray]:
        """Every block's attention probabilities, (B, heads, T, T) float32 each. Optional: a
        backend whose kernels never hold the probabilities (fused, online softmax) leaves it."""
        self.require_attention_maps()
        raise NotImplementedError

    @classmethod
    def require_attention_maps(cls) -> None:
        """BackendError naming the backends that give attention maps, unless this one does."""
        if cls.attention_maps is not Backend.attention_maps:
            return
        from . import backend_class, names

        able = [n for n in names()
                if backend_class(n).attention_maps is not Backend.attention_maps]
        raise BackendError(f"backend {cls.name!r} cannot give attention maps (its attention "
                           f"kernels never hold the probabilities); these can: {', '.join(able)}")


def check_images(images: Any, cfg: ViTConfig) -> np.ndarray:
    """Return images as a (B, C, H, W) float32 C-contiguous numpy array, or raise a clear error.

    CPU tensors and other array-likes pass through np.asarray without a copy; nothing is
    converted silently: a wrong dtype or layout is the caller's to fix.
    """
    if not isinstance(images, np.ndarray):
        if not hasattr(images, "__array__") and not hasattr(images, "__array_interface__"):
            raise TypeError(f"images must be a numpy array of shape (B, {cfg.in_chans}, "
                            f"{cfg.image_size}, {cfg.image_size}), got {type(images).__name__}")
        images = np.asarray(images)
    expected = (cfg.in_chans, cfg.image_size, cfg.image_size)
    if images.ndim == 3 and images.shape == expected:
        raise ValueError(f"images has shape {images.shape}: one image without a batch axis; "
                         f"pass images[None] for shape (1, {', '.join(map(str, expected))})")
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"images has shape {images.shape}, expected (B, "
                         f"{', '.join(map(str, expected))}) for config {cfg.name}; "
                         "use polyvit.preprocess to resize and crop images")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image")
    if images.dtype != np.float32:
        raise TypeError(f"images has dtype {images.dtype}, expected float32; "
                        "pass images.astype(np.float32)")
    if not images.flags.c_contiguous:
        raise ValueError("images is not C-contiguous (a transposed or strided view); "
                         "pass np.ascontiguousarray(images)")
    return images
