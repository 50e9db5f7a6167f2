"""Backend "torch": the reference forward (polyvit.reference) run by torch on the CPU.

fp64 is the parity oracle; its ops (TorchBackend.ops("fp64")) take and return float64 arrays.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from .base import THREADS, Backend, Ops

DTYPES = {"fp32": np.float32, "fp64": np.float64}


class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "fp64")
    option_specs = (THREADS,)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed: pip install torch (CPU: torch==2.13.0)"
        return True, ""

    @classmethod
    def make_ops(cls, precision: str, threads: int) -> "TorchOps":
        _set_threads(threads)
        return TorchOps(precision)

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        super().__init__(config, weights, precision, **options)
        import torch

        _set_threads(self.options["threads"])
        self._dtype = getattr(torch, np.dtype(DTYPES[precision]).name)
        self._weights = {k: torch.from_numpy(np.asarray(v)).to(self._dtype)
                         for k, v in weights.items()}

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits in this backend's precision (float64 for fp64: the parity oracle)."""
        import torch

        from .. import reference

        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._dtype)
            return reference.forward(self.config, self._weights, x).numpy()

    def forward(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).astype(np.float32, copy=False)

    def attention_maps(self, images: np.ndarray) -> list[np.ndarray]:
        import torch

        from .. import reference

        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._dtype)
            _, maps = reference.attention_maps(self.config, self._weights, x)
        return [m.numpy().astype(np.float32, copy=False) for m in maps]


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)  # process-wide: torch has no per-call setting


class TorchOps(Ops):
    """The reference ops; they compute in the precision's dtype (fp64: the oracle)."""

    def __init__(self, precision: str = "fp32") -> None:
        super().__init__(precision)
        self.dtype = DTYPES[precision]

    @staticmethod
    def _run(fn, *arrays):
        import torch

        with torch.inference_mode():
            return fn(*[None if a is None else torch.from_numpy(a) for a in arrays]).numpy()

    def _linear(self, x, weight, bias, epilogue, residual):
        from .. import reference

        def fn(x, w, b, r):
            y = reference.linear(x, w, b)
            if epilogue.startswith("gelu_"):
                y = reference.GELU[epilogue[5:]](y)
            elif epilogue == "residual":
                y = y + r
            return y
        return self._run(fn, x, weight, bias, residual)

    def _layernorm(self, x, weight, bias, eps):
        from .. import reference

        return self._run(lambda x, w, b: reference.layernorm(x, w, b, eps), x, weight, bias)

    def _attention(self, qkv, num_heads):
        from .. import reference

        return self._run(lambda q: reference.attention(q, num_heads), qkv)

    def _bias_gelu(self, x, bias, form):
        from .. import reference

        return self._run(lambda x, b: reference.GELU[form](x + b), x, bias)

    def _patch_embed(self, images, weight, bias):
        from .. import reference

        def fn(images, w, b):
            patches = reference.patchify(images, w.shape[-1])  # (B, N, C*P*P)
            return reference.linear(patches, w.reshape(w.shape[0], -1), b)
        return self._run(fn, images, weight, bias)
