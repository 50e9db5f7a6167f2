"""Where the kernels run, and how a launch picks its block sizes.

Triton reads TRITON_INTERPRET when @triton.jit decorates a kernel, so the mode is fixed for the
life of the process at the moment these modules are imported: INTERPRET records it.

On a GPU every kernel is autotuned over a few configs per shape key. Under the interpreter the
same kernel runs with one fixed config per launch: autotuning there would time numpy, and large
blocks mean fewer interpreted programs (each program costs Python overhead, the block's math is
one numpy call).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable, ContextManager, Sequence

import torch
import triton

try:
    from triton import knobs as _knobs

    INTERPRET = bool(_knobs.runtime.interpret)
except (ImportError, AttributeError):  # older triton: the variable itself
    INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# The interpreter's fixed block sizes are capped here: bigger blocks are fewer programs (each
# costs Python overhead) but more masked work on tails. 256 was fastest on ViT-S/32's GEMMs.
INTERPRETER_BLOCK = 256


_INTERPRETER_LOCK = threading.Lock()


def interpreting() -> bool:
    return INTERPRET


def launches() -> ContextManager:
    """Held around a sequence of launches. The interpreter patches triton.language while a
    kernel runs, so two threads interpreting at once would break each other: there it is one
    process-wide lock. Compiled kernels need none."""
    return _INTERPRETER_LOCK if INTERPRET else contextlib.nullcontext()


# POLYVIT_TRITON_AUTOTUNE=0: on a GPU every kernel runs its first config, untimed (the tests: a
# few hundred shapes would each be timed over every config otherwise).
AUTOTUNE = os.environ.get("POLYVIT_TRITON_AUTOTUNE", "1").strip() != "0"


def tuned(configs: Sequence[triton.Config], key: Sequence[str]) -> Callable:
    """@triton.autotune(configs, key) on a GPU (configs[:1], which Triton runs untimed, when
    POLYVIT_TRITON_AUTOTUNE=0); under the interpreter the kernel unchanged (its launcher passes
    fixed block sizes)."""
    def wrap(kernel):
        if INTERPRET:
            return kernel
        return triton.autotune(configs=list(configs if AUTOTUNE else configs[:1]),
                               key=list(key))(kernel)
    return wrap


def block(n: int, floor: int = 16, cap: int = INTERPRETER_BLOCK) -> int:
    """The interpreter's block size for an axis of n elements: the next power of two, at least
    `floor` (tl.dot needs 16) and at most `cap`."""
    return max(floor, min(cap, triton.next_power_of_2(max(int(n), 1))))


def dot_precision(dtype: torch.dtype, tf32: bool) -> str:
    """input_precision for tl.dot: "ieee" keeps fp32 products exact (Triton's default on a GPU is
    TF32); "tf32" only when asked. bf16/fp16 operands ignore it (given Triton's GPU default)."""
    if dtype == torch.float32:
        return "tf32" if tf32 else "ieee"
    return "tf32"
