"""Features: the pre-logits embedding (class token after the final norm) on every backend, held
to the fp32 parity rule against the float64 reference's, and vit-run --features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polyvit
from polyvit import parity, reference
from polyvit.config import get_config
from polyvit.weights import random_weights, save

CFG = get_config("vit_test")


def reference_features(cfg, weights, images, dtype):
    w = {k: torch.from_numpy(v).to(dtype) for k, v in weights.items()}
    with torch.no_grad():
        return reference.features(cfg, w, torch.from_numpy(images).to(dtype)).double().numpy()


def test_features_match_the_reference_on_every_backend(backend_fp32):
    name, precision = backend_fp32
    weights = random_weights(CFG, seed=21)
    images = parity.random_images(CFG, 4, seed=22)
    oracle = reference_features(CFG, weights, images, torch.float64)
    tol = parity.tolerance(reference_features(CFG, weights, images, torch.float32), oracle)
    model = polyvit.load(weights, backend=name, precision=precision, config=CFG, features=True)
    feats = model.forward_features(images)
    assert feats.shape == (4, CFG.embed_dim) and feats.dtype == np.float32
    err = float(np.max(np.abs(feats - oracle)))
    assert err <= tol, f"{name}: max |features - reference| {err:.3g} over the bound {tol:.3g}"
    logits, same = model.logits_and_features(images)
    np.testing.assert_array_equal(same, feats)
    plain = polyvit.load(weights, backend=name, precision=precision, config=CFG)
    np.testing.assert_array_equal(logits, plain(images))  # the wider head changes no logit


def test_a_model_without_features_says_how_to_get_them():
    model = polyvit.load(None, config="vit_test")
    images = parity.random_images(CFG, 1)
    try:
        model.forward_features(images)
    except ValueError as exc:
        assert "features=True" in str(exc)
    else:
        raise AssertionError("forward_features on a logits-only model did not raise")


def test_vit_run_saves_the_features_of_each_image(tmp_path, capsys):
    from polyvit.cli import run as run_cli

    weights = tmp_path / "tiny.safetensors"
    save(weights, CFG, random_weights(CFG, seed=23))
    sample = polyvit.labels.sample_image_path()
    out = tmp_path / "feats.npy"
    assert run_cli.main([sample, sample, "--weights", str(weights), "--backend", "cpp",
                         "--features", str(out)]) == 0
    saved = np.load(out)
    model = polyvit.load(str(weights), backend="cpp", features=True)
    x = polyvit.preprocess(sample, model.config)[None]
    assert saved.shape == (2, CFG.embed_dim)
    np.testing.assert_array_equal(saved[0], model.forward_features(x)[0])
    np.testing.assert_array_equal(saved[1], saved[0])


def reference_tokens(cfg, weights, images, dtype):
    """Every normed token from the reference, the last block whole."""
    w = {k: torch.from_numpy(v).to(dtype) for k, v in weights.items()}
    with torch.no_grad():
        x = reference.embed(cfg, w, torch.from_numpy(images).to(dtype))
        for i in range(cfg.depth):
            x = reference.block(cfg, w, i, x)
        return reference.layernorm(x, w["norm.weight"], w["norm.bias"], cfg.ln_eps).double().numpy()


CASES = {"vit_test": CFG,
         "seed_layout": CFG.replace(name="seed_like", patch_norm_pre=True, patch_norm_post=True,
                                    qkv_bias=False, ln_eps=1e-5)}


@pytest.mark.parametrize("case", CASES)
def test_tokens_and_mean_pooling_match_the_reference_on_every_backend(backend_fp32, case):
    """return_tokens=True and pool="mean" run op by op on the backend's own kernels."""
    name, precision = backend_fp32
    cfg = CASES[case]
    weights = random_weights(cfg, seed=24)
    images = parity.random_images(cfg, 3, seed=25)
    oracle = reference_tokens(cfg, weights, images, torch.float64)
    tol = parity.tolerance(reference_tokens(cfg, weights, images, torch.float32), oracle)
    model = polyvit.load(weights, backend=name, precision=precision, config=cfg, features=True)
    tokens = model.forward_features(images, return_tokens=True)
    assert tokens.shape == (3, cfg.num_tokens, cfg.embed_dim) and tokens.dtype == np.float32
    err = float(np.max(np.abs(tokens - oracle)))
    assert err <= tol, f"{name}: max |tokens - reference| {err:.3g} over the bound {tol:.3g}"
    np.testing.assert_allclose(model.forward_features(images, pool="mean"),
                               tokens[:, 1:].mean(axis=1), rtol=0, atol=1e-6)
    # the op-by-op class token agrees with the fused forward's
    np.testing.assert_allclose(tokens[:, 0], model.forward_features(images), rtol=0, atol=2 * tol)
