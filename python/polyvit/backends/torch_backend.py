"""Backend "torch": the reference forward (polyvit.reference) run by torch on the CPU."""

from __future__ import annotations

import importlib.util
from typing import Mapping

import numpy as np

from ..config import ViTConfig
from .base import LINEAR_EPILOGUES, Backend

DTYPES = {"fp32": "float32", "fp64": "float64"}


class TorchBackend(Backend):
    name = "torch"
    precisions = ("fp32", "fp64")
    options = ("threads",)

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "torch is not installed: pip install torch (CPU: torch==2.13.0)"
        return True, ""

    @classmethod
    def ops(cls) -> "TorchOps":
        return TorchOps()

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", threads: int | None = None) -> None:
        options = {} if threads is None else {"threads": threads}
        super().__init__(config, weights, precision, **options)
        import torch

        if threads is not None:
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-call setting
        self._dtype = getattr(torch, DTYPES[precision])
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


class TorchOps:
    """The reference ops on numpy arrays; they compute in the inputs' dtype (float64: oracle)."""

    @staticmethod
    def _run(fn, *arrays):
        import torch

        with torch.inference_mode():
            tensors = [None if a is None else torch.from_numpy(np.ascontiguousarray(a))
                       for a in arrays]
            return fn(*tensors).numpy()

    def linear(self, x, weight, bias, epilogue="none", residual=None):
        from .. import reference

        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")

        def fn(x, w, b, r):
            y = reference.linear(x, w, b)
            if epilogue.startswith("gelu_"):
                y = reference.GELU[epilogue[5:]](y)
            elif epilogue == "residual":
                y = y + r
            return y
        return self._run(fn, x, weight, bias, residual)

    def layernorm(self, x, weight, bias, eps):
        from .. import reference

        return self._run(lambda x, w, b: reference.layernorm(x, w, b, eps), x, weight, bias)

    def attention(self, qkv, num_heads):
        from .. import reference

        return self._run(lambda q: reference.attention(q, num_heads), qkv)

    def bias_gelu(self, x, bias, form="erf"):
        from .. import reference

        return self._run(lambda x, b: reference.GELU[form](x + b), x, bias)
