"""Backend "cpp": the C++ CPU forward pass of polyvit._cpu (cpp_cpu/, hand-written SIMD kernels).

fp32 is the parity precision; bf16 (AVX512_BF16 dot products, fp32 accumulation) and int8
(weights per output channel, activations per token, AVX512_VNNI) trade accuracy for speed and
are measured against fp32 in tests/test_cpp_precisions.py. The extension is imported lazily.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from .base import LINEAR_EPILOGUES, Backend

ISAS = ("auto", "avx512", "avx2", "generic")
NEEDS = {"bf16": "avx512_bf16", "int8": "avx512_vnni"}  # CPU feature each precision needs


def _native():
    from .. import _cpu

    return _cpu


class CppBackend(Backend):
    name = "cpp"
    precisions = ("fp32", "bf16", "int8")
    options = ("threads", "isa")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _native()
        except ImportError as exc:
            return False, (f"the C++ extension polyvit._cpu is not built ({exc}); reinstall "
                           "polyvit from source with a C++17 compiler, OpenMP and CMake >= 3.25: "
                           "pip install -e . (POLYVIT_CPP is on by default)")
        return True, ""

    @classmethod
    def ops(cls, isa: str = "auto", threads: int | None = None) -> "CppOps":
        return CppOps(isa, threads)

    @classmethod
    def supports(cls, precision: str) -> tuple[bool, str]:
        """(True, "") when this CPU runs `precision`, else (False, why)."""
        feature = NEEDS.get(precision)
        if feature and not _native().cpu_has(feature):
            return False, (f"precision {precision!r} needs a CPU with {feature.upper()}, which "
                           "this one lacks; use precision='fp32'")
        return True, ""

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        """options: threads (default OMP_NUM_THREADS, else all cores); isa (auto, avx512,
        avx2, generic: which kernel set runs; auto picks the best this CPU has)."""
        super().__init__(config, weights, precision, **options)
        threads, isa = options.get("threads"), options.get("isa", "auto")
        ok, why = self.supports(precision)
        if not ok:
            raise BackendError(why)
        if isa not in ISAS:
            raise BackendError(f"isa {isa!r} is not one of {', '.join(ISAS)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise BackendError(f"threads must be a positive int, got {threads!r}")
        self._model = _native().Model(config.to_dict(), dict(weights), precision,
                                      threads or 0, isa)

    @property
    def threads(self) -> int:
        return self._model.threads

    @property
    def isa(self) -> str:
        return self._model.isa

    def forward(self, images: np.ndarray) -> np.ndarray:
        return self._model.forward(images)


class CppOps:
    """The native ops on float32 numpy arrays (checked at the native boundary)."""

    def __init__(self, isa: str = "auto", threads: int | None = None) -> None:
        self._cpu = _native()
        self._kw = {"isa": isa, "threads": threads or 0}

    def linear(self, x, weight, bias, epilogue="none", residual=None):
        if epilogue not in LINEAR_EPILOGUES:
            raise ValueError(f"unknown epilogue {epilogue!r}; one of {LINEAR_EPILOGUES}")
        return self._cpu.linear(x, weight, bias, epilogue, residual, **self._kw)

    def layernorm(self, x, weight, bias, eps):
        return self._cpu.layernorm(x, weight, bias, float(eps), **self._kw)

    def attention(self, qkv, num_heads):
        return self._cpu.attention(qkv, int(num_heads), **self._kw)

    def bias_gelu(self, x, bias, form="erf"):
        return self._cpu.bias_gelu(x, bias, form, **self._kw)
