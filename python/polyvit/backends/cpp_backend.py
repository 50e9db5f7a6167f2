"""Backend "cpp": the C++ CPU forward pass of polyvit._cpu (cpp_cpu/, hand-written SIMD kernels).

fp32 is the parity precision; bf16 (AVX512_BF16 dot products, fp32 accumulation) and int8
(weights per output channel, activations per token; AVX512_VNNI, else the same int32 sums from
AVX2 or portable code) trade accuracy for speed. The native side receives the config as
config_fields(cfg) and the weights by their names, and checks each tensor where it takes it.
The extension is imported lazily.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import ViTConfig
from ..errors import BackendError
from . import _native
from .base import THREADS, Backend, Ops, choice_option

ISAS = ("auto", "avx512", "avx2", "generic")
NEEDS = {"bf16": "avx512_bf16"}  # the CPU feature a precision needs (int8 runs on every set)


def _cpu():
    from .. import _cpu

    return _cpu


class CppBackend(Backend):
    name = "cpp"
    precisions = ("fp32", "bf16", "int8")
    option_specs = (THREADS, choice_option(
        "isa", ISAS, "auto", "the kernel set that runs: auto picks the best this CPU has; "
        "bf16 needs avx512 (tests and benchmarks force one)"))

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _cpu()
        except ImportError as exc:
            return False, (f"the C++ extension polyvit._cpu is not built ({exc}); reinstall "
                           "polyvit from source with a C++17 compiler, OpenMP and CMake >= 3.25: "
                           "pip install -e . (POLYVIT_CPP is on by default)")
        return True, ""

    @classmethod
    def supports(cls, precision: str, isa: str = "auto", **options: Any) -> tuple[bool, str]:
        """(True, "") when this CPU runs `precision` with the kernel set `isa`, else (False, why)
        naming what it lacks."""
        cpu = _cpu()
        if isa != "auto" and isa not in cpu.isas().split():
            return False, (f"isa {isa!r}: this CPU runs only {cpu.isas().replace(' ', ', ')}; "
                           "use isa='auto'")
        feature = NEEDS.get(precision)
        if feature and not cpu.cpu_has(feature):
            return False, (f"precision {precision!r} needs a CPU with {feature.upper()}, which "
                           "this one lacks; use precision='fp32'")
        if feature and isa not in ("auto", "avx512"):
            return False, (f"precision {precision!r} runs with the avx512 kernels, not "
                           f"isa={isa!r}; use isa='auto' or 'avx512'")
        return True, ""  # int8: vpdpbusd with AVX512_VNNI, else exact AVX2 or portable tiles

    @classmethod
    def make_ops(cls, precision: str, threads: int, isa: str) -> "CppOps":
        return CppOps(precision, threads, isa)

    def __init__(self, config: ViTConfig, weights: Mapping[str, np.ndarray],
                 precision: str = "fp32", **options: Any) -> None:
        super().__init__(config, weights, precision, **options)
        self._model = _cpu().Model(_native.config_fields(config), dict(weights), precision,
                                   self.options["threads"], self.options["isa"],
                                   _native.BATCH_SIZES_KEPT)

    @property
    def threads(self) -> int:
        return self._model.threads

    @property
    def isa(self) -> str:
        """The kernel set in use (what isa='auto' picked)."""
        return self._model.isa

    @property
    def int8_isa(self) -> str | None:
        """The int8 GEMM kernels of an int8 model: avx512_vnni (with isa avx512 on a CPU that has
        it), avx2 (isa avx2, or avx512 without VNNI) or generic; None in fp32 and bf16."""
        return self._model.int8_isa

    def forward(self, images: np.ndarray) -> np.ndarray:
        return self._model.forward(images)

    def attention_maps(self, images: np.ndarray) -> list[np.ndarray]:
        """Every block's probabilities from the fp32 attention kernel (fp32 and int8 models)."""
        if self.precision == "bf16":
            raise BackendError("backend 'cpp' gives attention maps in fp32 and int8; a bf16 "
                               "model attends in bf16 and keeps no map: load it in fp32")
        return list(self._model.attention_maps(images))

    def profile(self, images: np.ndarray, rounds: int = 10) -> dict[str, float]:
        """Seconds per kind of op of one forward pass, averaged over rounds."""
        return self._model.profile(images, rounds)

    def cached_batch_sizes(self) -> list[int]:
        """Batch sizes whose workspaces are kept, least recently used first."""
        return self._model.cached_batch_sizes()

    def clear_cache(self) -> None:
        self._model.clear_cache()


class CppOps(Ops):
    """The native single ops in a precision, on arrays base.Ops has checked (and the native
    boundary checks again)."""

    def __init__(self, precision: str, threads: int, isa: str) -> None:
        super().__init__(precision)
        self._cpu = _cpu()
        self._kw = {"precision": precision, "isa": isa, "threads": threads}

    def _linear(self, x, weight, bias, epilogue, residual):
        return self._cpu.linear(x, weight, bias, epilogue, residual, **self._kw)

    def _layernorm(self, x, weight, bias, eps):
        return self._cpu.layernorm(x, weight, bias, eps, **self._kw)

    def _attention(self, qkv, num_heads):
        return self._cpu.attention(qkv, num_heads, **self._kw)

    def _bias_gelu(self, x, bias, form):
        return self._cpu.bias_gelu(x, bias, form, **self._kw)

    def _patch_embed(self, images, weight, bias):
        return self._cpu.patch_embed(images, weight, bias, **self._kw)
