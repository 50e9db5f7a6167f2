"""Shared fixtures: every backend-parametrised test runs each registered backend, skipping an
unavailable one with its reason, unless POLYVIT_REQUIRE_BACKENDS names it (CI sets it for the
backends this machine must run, so a missing one fails instead of skipping).

The matrix fixtures pair each native backend with each precision it offers; a precision this
machine cannot run (a CPU feature, a device aspect) skips with the backend's reason."""

from __future__ import annotations

import os

import pytest
import torch

# The triton backend's kernels run through Triton's interpreter on CPU tensors where there is no
# CUDA GPU. Triton reads this when it decorates the kernels, so it is set before any test
# imports them; on a GPU machine the compiled kernels are tested instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from polyvit import backends  # noqa: E402

# Backends whose kernels run through an interpreter here (seconds per ViT-S/32 forward): the
# end-to-end tests that need many large forwards run them on the small configs only.
INTERPRETED = {"triton"} if os.environ.get("TRITON_INTERPRET") == "1" else set()
REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}
NATIVE = [n for n in backends.names() if n != "torch"]  # torch is the oracle, not a candidate


def _backend_or_skip(name: str) -> str:
    ok, reason = backends.available_backends()[name]
    if not ok:
        if name in REQUIRED:
            pytest.fail(f"backend {name} is required here (POLYVIT_REQUIRE_BACKENDS) but is "
                        f"unavailable: {reason}")
        pytest.skip(f"backend {name} unavailable: {reason}")
    return name


def _precision_or_skip(name: str, precision: str) -> tuple[str, str]:
    ok, reason = backends.backend_class(_backend_or_skip(name)).supports(precision)
    if not ok:
        pytest.skip(f"{name} {precision} does not run here: {reason}")
    return name, precision


def pairs(precisions: str = "all") -> list:
    """pytest params (backend, precision) over the native backends: precisions "fp32", "reduced"
    (every other one) or "all"."""
    out = []
    for name in NATIVE:
        for precision in backends.backend_class(name).precisions:
            if precisions == "all" or (precision == "fp32") == (precisions == "fp32"):
                out.append(pytest.param((name, precision), id=f"{name}-{precision}"))
    return out


@pytest.fixture(params=backends.names())
def backend_name(request) -> str:
    """Each registered backend that can run here."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=NATIVE)
def native_backend_name(request) -> str:
    """Each registered backend other than the reference."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=pairs("all"))
def backend_precision(request) -> tuple[str, str]:
    """Each native backend with each precision it offers, where both run here."""
    return _precision_or_skip(*request.param)


@pytest.fixture(params=pairs("fp32"))
def backend_fp32(request) -> tuple[str, str]:
    return _precision_or_skip(*request.param)


@pytest.fixture(params=pairs("reduced"))
def backend_reduced(request) -> tuple[str, str]:
    """Each native backend with each of its reduced precisions (bf16, fp16, int8)."""
    return _precision_or_skip(*request.param)
