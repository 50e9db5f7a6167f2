"""End-to-end parity: every backend's fp32 logits against the float64 reference, by the rule of
polyvit.parity, on every config and variant the project supports."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights

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
}
BATCH = 3


@lru_cache(maxsize=None)
def fixture(case: str):
    """(config, weights, images, float64 oracle, tolerance), computed once per case."""
    cfg = CASES[case]
    weights = random_weights(cfg, seed=11)
    images = parity.random_images(cfg, BATCH, seed=12)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    return cfg, weights, images, oracle, tol


@pytest.mark.parametrize("case", CASES)
def test_fp32_logits_match_the_float64_reference(backend_name, case):
    cfg, weights, images, oracle, tol = fixture(case)
    model = polyvit.load(weights, backend=backend_name, config=cfg)
    logits = model(images)
    assert logits.shape == (BATCH, cfg.num_classes) and logits.dtype == np.float32
    result = parity.compare(logits, oracle, tol)
    assert result.passed, f"{backend_name} on {case}: {result.describe()}"


@pytest.mark.parametrize("case", ["vit_test", "vit_small_patch32_224"])
def test_each_image_is_independent_of_its_batch(backend_name, case):
    """Row i of a batch equals image i run alone: no state leaks between images or calls."""
    cfg, weights, images, oracle, tol = fixture(case)
    model = polyvit.load(weights, backend=backend_name, config=cfg)
    batched = model(images)
    for i in range(BATCH):
        alone = model(np.ascontiguousarray(images[i:i + 1]))
        assert parity.compare(alone, oracle[i:i + 1], tol).passed
        np.testing.assert_allclose(alone[0], batched[i], rtol=0, atol=2 * tol)


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
