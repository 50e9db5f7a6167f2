"""The backend contract, and the input checks every backend shares.

A backend is a class registered by name in polyvit.backends. It must be cheap to import: heavy
modules (torch, a native extension's dependencies) load in availability() probes or __init__.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Protocol

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError

LINEAR_EPILOGUES = ("none", "gelu_erf", "gelu_tanh", "residual")


class Ops(Protocol):
    """A backend's single ops, float32 numpy in and out, for the op-level parity harness.

    linear:     x (M, K), weight (N, K), bias (N,) or None -> (M, N) = x @ weight.T + bias, then
                the epilogue: "none", "gelu_erf", "gelu_tanh", or "residual" (+ residual (M, N)).
    layernorm:  x (M, C), weight (C,), bias (C,) -> (M, C).
    attention:  qkv (B, T, 3D) packed q|k|v, heads -> (B, T, D).
    bias_gelu:  x (M, N), bias (N,) -> gelu(x + bias), form "erf" or "tanh".
    """

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               epilogue: str = "none", residual: np.ndarray | None = None) -> np.ndarray: ...

    def layernorm(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                  eps: float) -> np.ndarray: ...

    def attention(self, qkv: np.ndarray, num_heads: int) -> np.ndarray: ...

    def bias_gelu(self, x: np.ndarray, bias: np.ndarray, form: str = "erf") -> np.ndarray: ...


class Backend:
    """Base of every backend. Subclasses set the class attributes and implement forward()."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]  # the first one is the parity precision
    options: ClassVar[tuple[str, ...]] = ()  # extra keyword options polyvit.load passes on

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(True, "") or (False, why not and what to do). Never raises."""
        raise NotImplementedError

    @classmethod
    def ops(cls) -> Ops:
        """This backend's single ops for the op-level harness."""
        raise NotImplementedError

    @classmethod
    def check_arguments(cls, precision: str, options: Mapping[str, Any]) -> None:
        """BackendError unless this backend offers `precision` and takes every option."""
        unknown = sorted(set(options) - set(cls.options))
        if unknown:
            accepted = ", ".join(cls.options) or "none"
            raise BackendError(f"backend {cls.name!r} does not take option(s) "
                               f"{', '.join(unknown)}; it accepts: {accepted}")
        if precision not in cls.precisions:
            raise BackendError(f"backend {cls.name!r} does not offer precision {precision!r}; "
                               f"it offers: {', '.join(cls.precisions)}")

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray], precision: str,
                 **options: Any) -> None:
        self.check_arguments(precision, options)
        self.config = config
        self.precision = precision

    def forward(self, images: np.ndarray) -> np.ndarray:
        """(B, C, H, W) float32, checked by check_images -> (B, num_classes) float32 logits."""
        raise NotImplementedError


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
