"""The sycl backend's reduced precisions against its fp32: bf16 and fp16 weights (the GEMM panels
stored in 16 bits and widened to fp32 as they load; activations, accumulation and every other
op stay fp32). fp16 needs the device's fp16 aspect (the OpenCL CPU device has it).

Op level: each reduced-precision GEMM equals the float64 product with the weights rounded the
way the backend rounds them, so layout, padding and tail bugs show up far above fp32 rounding.
End to end: cosine similarity and top-1 agreement with fp32 logits over 64 images.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import polyvit
from polyvit import backends, parity
from polyvit.backends.torch_backend import TorchOps
from polyvit.config import get_config
from polyvit.errors import BackendError
from polyvit.weights import random_weights

from test_ops import LINEAR_SHAPES, rand

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}


@pytest.fixture(scope="module")
def sycl():
    ok, reason = backends.available_backends()["sycl"]
    if not ok:
        if "sycl" in REQUIRED:
            pytest.fail(f"backend sycl is required here but is unavailable: {reason}")
        pytest.skip(f"backend sycl unavailable: {reason}")


@pytest.fixture(params=["bf16", "fp16"])
def precision(sycl, request):
    from polyvit.backends.sycl_backend import device_state

    if request.param not in device_state().precisions:
        pytest.skip(f"the default SYCL device has no {request.param}")
    return request.param


def rounded(w: np.ndarray, precision: str) -> np.ndarray:
    """The weights as the backend stores them, back as float64."""
    if precision == "fp16":
        return w.astype(np.float16).astype(np.float64)
    bits = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16  # nearest, ties to even
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


# ---- op level -----------------------------------------------------------------------------------

@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("epilogue", ["none", "gelu_erf", "gelu_tanh", "residual"])
def test_linear_matches_the_product_with_rounded_weights(precision, m, k, n, epilogue):
    from polyvit.backends.sycl_backend import SyclOps

    rng = np.random.default_rng(m + 3 * k + 7 * n)
    x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
    r = rand(rng, m, n) if epilogue == "residual" else None
    out = SyclOps(precision=precision).linear(x, w, b, epilogue, r)
    expected = TorchOps().linear(x.astype(np.float64), rounded(w, precision),
                                 b.astype(np.float64), epilogue,
                                 None if r is None else r.astype(np.float64))
    # what remains is fp32 rounding of the accumulation and the epilogue
    scale = max(1.0, float(np.abs(expected).max()))
    tol = 64 * np.finfo(np.float32).eps * np.sqrt(k) * scale
    err = float(np.abs(out - expected).max())
    assert err <= tol, f"{precision} linear {m}x{k}x{n} {epilogue}: max|d| {err:.3g} > {tol:.3g}"


# ---- end to end ---------------------------------------------------------------------------------

# Thresholds (measured on the three configs below, seeds 1 and 2, 64 images each, 2026-11):
#   bf16 weights: relative L2 logit error <= 0.6%, cosine >= 0.99998; fp16 weights: <= 0.08%,
#   cosine >= 0.9999997 (fp16 keeps 3 more mantissa bits: 8x finer rounding).
#   bf16 uses the C++ backend's bf16 thresholds: cosine >= 0.9995 (<= 3% relative error, 5x
#   the measured error) while a real bug (a wrong panel, a dropped bias, a bad tail) drops the
#   cosine far below 0.99. fp16: cosine >= 0.99999 (<= 0.45% relative error, about 6x measured).
# Top-1: seeded random weights give nearly flat logits, so a flip between near-equal classes says
#   nothing about the kernels. The top-1 must agree on every image whose fp32 lead exceeds 4x the
#   logit error the cosine bound allows (bf16 0.03 std, fp16 0.005 std), and on at least 90% of
#   all images (measured: bf16 97-100%, fp16 98-100%; the flips had leads <= 0.01 std).
COSINE = {"bf16": 0.9995, "fp16": 0.99999}
ERROR_STD = {"bf16": 0.03, "fp16": 0.005}
TOP1_OVERALL = 0.90
IMAGES = 64


@pytest.mark.parametrize("name", ["vit_small_patch32_224", "vit_tiny_patch16_224",
                                  "vit_small_patch32_224_seed"])
def test_accuracy_against_fp32(precision, name):
    cfg = get_config(name)
    weights = random_weights(cfg, seed=1)
    images = parity.random_images(cfg, IMAGES, seed=101)
    ref = polyvit.load(weights, backend="sycl", config=cfg)(images)
    out = polyvit.load(weights, backend="sycl", config=cfg, precision=precision)(images)
    found = parity.agreement(out, ref, ERROR_STD[precision])
    report = found.summary(f"{precision} {name}")
    print(report)
    assert found.cosine.min() >= COSINE[precision], report
    assert found.top1[found.clear].all(), report
    assert found.top1.mean() >= TOP1_OVERALL, report


def test_an_unknown_precision_is_refused(sycl):
    with pytest.raises(BackendError, match="does not offer precision 'int8'"):
        polyvit.load(config="vit_test", backend="sycl", precision="int8")
