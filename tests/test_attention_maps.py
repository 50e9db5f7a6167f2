"""Attention maps: every block's probabilities from the reference, checked against torch's own
multi-head attention; rollout; the PNG vit-run draws; backends that cannot give them say so."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import polyvit
from polyvit import parity, reference
from polyvit.attention_maps import class_attention, rollout
from polyvit.config import get_config
from polyvit.weights import random_weights

from scripts import assert_one_line_error, run

CFG = get_config("vit_test")


def test_every_block_map_is_torch_multihead_attentions_and_the_logits_are_forwards():
    weights = random_weights(CFG, seed=31)
    w = {k: torch.from_numpy(v).double() for k, v in weights.items()}
    x = torch.from_numpy(parity.random_images(CFG, 2, seed=32)).double()
    logits, maps = reference.attention_maps(CFG, w, x)
    assert len(maps) == CFG.depth
    assert all(m.shape == (2, CFG.num_heads, CFG.num_tokens, CFG.num_tokens) for m in maps)
    torch.testing.assert_close(logits, reference.forward(CFG, w, x), rtol=0, atol=1e-12)
    # block 0 through torch.nn.MultiheadAttention, an implementation written elsewhere
    mha = torch.nn.MultiheadAttention(CFG.embed_dim, CFG.num_heads, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(w["blocks.0.attn.qkv.weight"])
        mha.in_proj_bias.copy_(w["blocks.0.attn.qkv.bias"])
    h = torch.nn.functional.layer_norm(reference.embed(CFG, w, x), (CFG.embed_dim,),
                                       w["blocks.0.norm1.weight"], w["blocks.0.norm1.bias"],
                                       CFG.ln_eps)
    _, probs = mha(h, h, h, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(maps[0], probs, rtol=0, atol=1e-12)


def without_maps() -> str:
    """An available backend whose kernels keep no attention probabilities."""
    for name in ("mojo", "sycl"):
        if polyvit.available_backends().get(name, (False, ""))[0]:
            return name
    pytest.skip("neither mojo nor sycl is available here: no backend to refuse attention maps")


@pytest.mark.parametrize("config", ["vit_test", "vit_small_patch32_224"])
def test_cpp_maps_match_the_float64_reference_by_the_fp32_rule(config):
    """The cpp fp32 attention kernel writes its probabilities when asked: every block's map
    within the parity bound derived from torch fp32's maps, and the logits unchanged."""
    cfg = get_config(config)
    weights = random_weights(cfg, seed=33)
    images = parity.random_images(cfg, 2, seed=34)
    w64 = {k: torch.from_numpy(v).double() for k, v in weights.items()}
    _, oracle = reference.attention_maps(cfg, w64, torch.from_numpy(images).double())
    torch32 = polyvit.load(weights, backend="torch", config=cfg).attention_maps(images)
    model = polyvit.load(weights, backend="cpp", config=cfg)
    before = model(images)
    maps = model.attention_maps(images)
    assert len(maps) == cfg.depth
    for i, (got, ref, t32) in enumerate(zip(maps, oracle, torch32)):
        ref = ref.numpy()
        assert got.shape == (2, cfg.num_heads, cfg.num_tokens, cfg.num_tokens)
        tol = parity.tolerance(t32, ref)
        err = float(np.max(np.abs(got - ref)))
        assert err <= tol, f"block {i}: max |cpp - reference| {err:.3g} over {tol:.3g}"
    np.testing.assert_array_equal(model(images), before)


def test_the_model_gives_the_maps_where_it_can_and_a_clear_error_elsewhere():
    images = parity.random_images(CFG, 1)
    maps = polyvit.load(None, config="vit_test").attention_maps(images)
    assert len(maps) == CFG.depth and maps[0].dtype == np.float32
    np.testing.assert_allclose(maps[-1].sum(axis=-1), 1.0, atol=1e-5)
    int8 = polyvit.load(None, backend="cpp", precision="int8", config="vit_test")
    np.testing.assert_allclose(int8.attention_maps(images)[0].sum(axis=-1), 1.0, atol=1e-5)
    other = without_maps()
    with pytest.raises(polyvit.BackendError,
                       match="cannot give attention maps.*these can: torch, cpp"):
        polyvit.load(None, backend=other, config="vit_test").attention_maps(images)
    if "bf16" in polyvit.backends.backend_class("cpp").precisions and \
            polyvit.backends.backend_class("cpp").supports("bf16")[0]:
        with pytest.raises(polyvit.BackendError, match="load it in fp32"):
            polyvit.load(None, backend="cpp", precision="bf16", config="vit_test").attention_maps(images)


def test_rollout_of_uniform_attention_is_uniform_and_class_attention_is_the_class_row():
    t = CFG.num_tokens
    maps = [np.full((1, 2, t, t), 1.0 / t) for _ in range(3)]
    np.testing.assert_allclose(rollout(maps), np.full((1, t - 1), 1.0 / (t - 1)), atol=1e-12)
    rng = np.random.default_rng(0)
    last = rng.random((1, 2, t, t))
    assert np.array_equal(class_attention(maps[:2] + [last]), last[:, :, 0, 1:])


def test_vit_run_draws_the_attention_png(tmp_path):
    out = tmp_path / "attention.png"
    done = run("vit-run", "--config", "vit_test", "--attention", str(out))
    assert done.returncode == 0, done.stderr
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 300
    assert_one_line_error("vit-run", ["--config", "vit_test", "--backend", without_maps(),
                                      "--attention", str(tmp_path / "a.png")],
                          "these can: torch, cpp")
    done = run("vit-run", "--config", "vit_test", "--backend", "cpp", "--attention",
               str(tmp_path / "cpp.png"))
    assert done.returncode == 0 and (tmp_path / "cpp.png").stat().st_size > 10_000, done.stderr
    assert_one_line_error("vit-run", ["--config", "vit_test", "--attention",
                                      str(tmp_path / "no" / "such" / "c.png")], "does not exist")
    sample = polyvit.labels.sample_image_path()
    assert_one_line_error("vit-run", [sample, sample, "--config", "vit_test", "--attention",
                                      str(tmp_path / "b.png")], "give exactly one image")
