"""The C++ backend's reduced precisions against its fp32: bf16 (AVX512_BF16 dot products, fp32
accumulation) and int8 (weights per output channel, activations per token, AVX512_VNNI).

Op level: each reduced-precision GEMM equals the float64 product of the inputs rounded the way
the kernel rounds them (bf16 round-to-nearest-even; int8 per-channel / per-token quantisation
emulated in numpy), so layout, padding and tail bugs show up as errors far above fp32 rounding.
End to end: cosine similarity and top-1 agreement with fp32 logits over 64 images.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights

_cpu = pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")
from test_ops import LINEAR_SHAPES, rand  # noqa: E402

FEATURE = {"bf16": "avx512_bf16", "int8": "avx512_vnni"}


@pytest.fixture(params=["bf16", "int8"])
def precision(request):
    if not _cpu.cpu_has(FEATURE[request.param]):
        pytest.skip(f"this CPU lacks {FEATURE[request.param].upper()}")
    return request.param


# ---- op level -----------------------------------------------------------------------------------

def bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 -> nearest bf16 (ties to even), back as float64."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def int8_weights(w: np.ndarray) -> np.ndarray:
    """Per output channel (row): symmetric, scale max|w| / 127."""
    scale = np.abs(w).max(1, keepdims=True) / np.float32(127)
    scale[scale == 0] = 1
    return np.clip(np.rint(w / scale), -127, 127) * scale.astype(np.float64)


def u8_activations(x: np.ndarray) -> np.ndarray:
    """Per row (token): asymmetric u8 over [min(x, 0), max(x, 0)], as the kernel computes it."""
    lo = np.minimum(x.min(1, keepdims=True), 0).astype(np.float32)
    hi = np.maximum(x.max(1, keepdims=True), 0).astype(np.float32)
    scale = np.where(hi > lo, (hi - lo) / np.float32(255), np.float32(1)).astype(np.float32)
    zero = np.rint(-lo / scale)
    q = np.clip(np.rint(x * (np.float32(1) / scale)) + zero, 0, 255)
    return (q - zero) * scale.astype(np.float64)


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("epilogue", ["none", "gelu_erf", "residual"])
def test_linear_matches_the_rounded_product(precision, m, k, n, epilogue):
    from polyvit.backends.torch_backend import TorchOps

    rng = np.random.default_rng(m + 3 * k + 7 * n)
    x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
    r = rand(rng, m, n) if epilogue == "residual" else None
    out = _cpu.Linear(w, b, precision)(x, epilogue, r)
    if precision == "bf16":
        xq, wq = bf16_round(x), bf16_round(w)
    else:
        xq, wq = u8_activations(x), int8_weights(w)
    expected = TorchOps().linear(xq, wq, b.astype(np.float64), epilogue,
                                 None if r is None else r.astype(np.float64))
    # what remains is fp32 rounding of the accumulation and the epilogue (a quantisation step
    # that rounds the other way at a tie moves a product by one step: allowed for int8 once)
    scale = max(1.0, float(np.abs(expected).max()))
    tol = 64 * np.finfo(np.float32).eps * np.sqrt(k) * scale
    if precision == "int8":
        tol += float(np.abs(w).max() / 127 * (np.abs(x).max() + 1e-30) * 2 / 255)
    err = float(np.abs(out - expected).max())
    assert err <= tol, f"{precision} linear {m}x{k}x{n} {epilogue}: max|d| {err:.3g} > {tol:.3g}"


# ---- end to end ---------------------------------------------------------------------------------

# Thresholds (measured over configs and seeds when they were set, 64 images each):
#   cosine(reduced, fp32) per image: bf16 >= 0.99990 (0.99998 typical), int8 >= 0.9990 (0.9995).
#   bf16 keeps 8 significant bits per operand (rounding 2^-9); across 12 blocks the logits move
#   by ~0.6% (relative L2), cosine = 1 - rel^2 / 2. We assert 0.9995, i.e. <= 3% relative error:
#   5x the measured error, while a real bug (a wrong panel, a dropped bias, a bad tail) drops
#   the cosine far below 0.99. int8 rounds weights to 1/254 of each channel's range and
#   activations to 1/255 of each token's range: ~2.5% relative logit error measured; we assert
#   0.995 (<= 10%).
# Top-1: seeded random weights give nearly flat logits (14-41% of images have a top-1 lead
#   below 0.1 logit std, where trained checkpoints are peaked), so a flip there says nothing
#   about the kernels. We require the top-1 to agree on every image whose fp32 lead exceeds 4x
#   the logit error the cosine bound allows (bf16 0.03 std, int8 0.1 std: leads > 0.12 / 0.4
#   std), and overall agreement of at least 90% (bf16: 97-100% measured; int8: 92-100%).
COSINE = {"bf16": 0.9995, "int8": 0.995}
# odd sizes everywhere (D 45, head dim 9, MLP 99, 26 tokens): every pair / quad padding path
ODD = get_config("vit_test").replace(name="vit_test_odd", embed_dim=45, num_heads=5, mlp_dim=99,
                                     image_size=40)
CONFIGS = {"vit_small_patch32_224": get_config("vit_small_patch32_224"),
           "vit_tiny_patch16_224": get_config("vit_tiny_patch16_224"),
           "vit_small_patch32_224_seed": get_config("vit_small_patch32_224_seed"),
           "vit_test_odd": ODD}
ERROR_STD = {"bf16": 0.03, "int8": 0.1}
TOP1_OVERALL = 0.90
IMAGES = 64


@pytest.mark.parametrize("name", CONFIGS)
def test_accuracy_against_fp32(precision, name):
    cfg = CONFIGS[name]
    weights = random_weights(cfg, seed=1)
    images = parity.random_images(cfg, IMAGES, seed=101)
    ref = polyvit.load(weights, backend="cpp", config=cfg)(images)
    out = polyvit.load(weights, backend="cpp", config=cfg, precision=precision)(images)
    found = parity.agreement(out, ref, ERROR_STD[precision])
    report = found.summary(f"{precision} {name}")
    print(report)
    assert found.cosine.min() >= COSINE[precision], report
    assert found.top1[found.clear].all(), report
    assert found.top1.mean() >= TOP1_OVERALL, report


def test_reduced_precisions_keep_batch_rows_independent(precision):
    """Per-token activation scales: an image's logits do not depend on its batch neighbours."""
    cfg = get_config("vit_test")
    model = polyvit.load(random_weights(cfg, seed=4), backend="cpp", config=cfg,
                         precision=precision)
    images = parity.random_images(cfg, 4, seed=5)
    images[2] *= 50  # a loud neighbour must not change the others' quantisation
    batched = model(images)
    for i in range(4):
        np.testing.assert_array_equal(model(np.ascontiguousarray(images[i:i + 1]))[0], batched[i])
