"""End-to-end parity: every native backend's logits against the float64 reference, on every
config and variant the project supports.

fp32 is held to the derived rule of polyvit.parity (bound = 2 x torch fp32's error + floor, same
top-5). Reduced precisions (bf16, fp16, int8) are held to parity.REDUCED's cosine and top-1
budget against the backend's own fp32 logits over 64 images. The torch backend is the oracle
and the source of the bound, so it is not a candidate here (tests/test_reference.py checks it
against torch.nn.functional).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights

from conftest import INTERPRETED

TEST = get_config("vit_test")
CASES = {
    "vit_test": TEST,
    # the flags released checkpoints differ in, one variant each
    "vit_test-gelu_tanh": TEST.replace(gelu="tanh"),
    "vit_test-no_qkv_bias-eps1e-12": TEST.replace(qkv_bias=False, ln_eps=1e-12),
    "vit_test-patch_norms": TEST.replace(patch_norm_pre=True, patch_norm_post=True, ln_eps=1e-5),
    "vit_test-one_head": TEST.replace(num_heads=1),
    "vit_small_patch32_224": get_config("vit_small_patch32_224"),
    "vit_tiny_patch16_224": get_config("vit_tiny_patch16_224"),  # 197 tokens
    "vit_small_patch32_224_seed": get_config("vit_small_patch32_224_seed"),
    # another image size (polyvit.load(..., image_size=384)): 145 tokens
    "vit_small_patch32_384": get_config("vit_small_patch32_224").replace(
        name="vit_small_patch32_384", image_size=384),
}
# odd sizes everywhere (D 45, head dim 9, MLP 99, 26 tokens): every pair / quad padding path
ODD = TEST.replace(name="odd_sizes", embed_dim=45, num_heads=5, mlp_dim=99, image_size=40)
REDUCED_CASES = {name: CASES[name] for name in
                 ("vit_small_patch32_224", "vit_tiny_patch16_224", "vit_small_patch32_224_seed")}
REDUCED_CASES["odd_sizes"] = ODD
BATCH = 3
IMAGES = 64  # per reduced-precision case: enough clear top-1 leads to judge


@lru_cache(maxsize=None)
def fixture(case: str):
    """(config, weights, images, float64 oracle, tolerance), computed once per case."""
    cfg = CASES[case]
    weights = random_weights(cfg, seed=11)
    images = parity.random_images(cfg, BATCH, seed=12)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    return cfg, weights, images, oracle, tol


@pytest.mark.parametrize("case", CASES)
def test_fp32_logits_match_the_float64_reference(backend_fp32, case):
    name, precision = backend_fp32
    cfg, weights, images, oracle, tol = fixture(case)
    logits = polyvit.load(weights, backend=name, precision=precision, config=cfg)(images)
    assert logits.shape == (BATCH, cfg.num_classes) and logits.dtype == np.float32
    result = parity.compare(logits, oracle, tol)
    assert result.passed, f"{name} on {case}: {result.describe()}"


@pytest.mark.parametrize("case", REDUCED_CASES)
def test_reduced_precision_logits_agree_with_fp32(backend_reduced, case):
    name, precision = backend_reduced
    cfg = REDUCED_CASES[case]
    if name in INTERPRETED and cfg.depth > 2:
        pytest.skip(f"{name} runs through an interpreter here: {IMAGES} images of {case} would "
                    "take minutes (the small config runs here; the GPU check runs this one)")
    weights = random_weights(cfg, seed=1)
    images = parity.random_images(cfg, IMAGES, seed=101)
    fp32 = polyvit.load(weights, backend=name, config=cfg)(images)
    out = polyvit.load(weights, backend=name, precision=precision, config=cfg)(images)
    assert out.shape == fp32.shape and out.dtype == np.float32
    budget = parity.REDUCED[precision]
    found = parity.agreement(out, fp32, budget.error_std)
    assert found.passes(budget), found.summary(f"{name} {precision} {case}")


@pytest.mark.parametrize("case", ["vit_test", "vit_small_patch32_224"])
def test_each_image_is_independent_of_its_batch(backend_precision, case):
    """Row i of a batch equals image i run alone, bit for bit, in every precision (int8's
    per-token scales included): no state leaks between images or calls."""
    name, precision = backend_precision
    cfg, weights, images, _, _ = fixture(case)
    images = images.copy()
    images[1] *= 50  # a loud neighbour must not change the others' results
    model = polyvit.load(weights, backend=name, precision=precision, config=cfg)
    batched = model(images)
    for i in range(BATCH):
        alone = model(np.ascontiguousarray(images[i:i + 1]))
        np.testing.assert_array_equal(alone[0], batched[i], err_msg=f"{name} {precision} row {i}")


def test_the_rule_rejects_a_perturbed_backend():
    """The bound is tight enough to catch a small real bug: logits off by a bias-sized error."""
    cfg, weights, images, oracle, tol = fixture("vit_test")
    broken = dict(weights)
    broken["blocks.1.mlp.fc2.bias"] = weights["blocks.1.mlp.fc2.bias"] * 1.001
    logits = polyvit.load(broken, config=cfg)(images)
    assert not parity.compare(logits, oracle, tol).passed


def test_the_rule_rejects_a_swapped_top5():
    cfg, weights, images, oracle, tol = fixture("vit_test")
    swapped = oracle.copy()
    order = np.argsort(-oracle[0])
    swapped[0, order[0]], swapped[0, order[1]] = oracle[0, order[1]], oracle[0, order[0]]
    assert not parity.compare(swapped, oracle, tol).topk_ok


@pytest.mark.parametrize("precision", parity.REDUCED)
def test_the_reduced_budget_rejects_a_dropped_bias(precision):
    """A run that lost the head's bias fails every reduced budget; fp32 itself passes it. (Finer
    defects are the op-level rule's to catch: int8's budget tolerates a dropped MLP bias.)"""
    cfg = CASES["vit_small_patch32_224"]
    weights = random_weights(cfg, seed=1)
    images = parity.random_images(cfg, 16, seed=101)
    fp32 = polyvit.load(weights, config=cfg)(images)
    broken = dict(weights)
    broken["head.bias"] = np.zeros_like(weights["head.bias"])
    budget = parity.REDUCED[precision]
    assert parity.agreement(fp32, fp32, budget.error_std).passes(budget)
    out = polyvit.load(broken, config=cfg)(images)
    assert not parity.agreement(out, fp32, budget.error_std).passes(budget)
