"""The reference itself, against independent implementations in torch.nn.functional (float64,
so any difference is a semantic one, not rounding)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polyvit import reference
from polyvit.config import get_config
from polyvit.weights import random_weights

torch.manual_seed(0)
f64 = dict(dtype=torch.float64)


def test_layernorm_matches_torch():
    x, w, b = torch.randn(7, 384, **f64) * 3 + 2, torch.randn(384, **f64), torch.randn(384, **f64)
    for eps in (1e-6, 1e-5, 1e-12):
        torch.testing.assert_close(reference.layernorm(x, w, b, eps),
                                   F.layer_norm(x, (384,), w, b, eps), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form,approximate", [("erf", "none"), ("tanh", "tanh")])
def test_gelu_matches_torch(form, approximate):
    x = torch.linspace(-8, 8, 1001, **f64)
    torch.testing.assert_close(reference.GELU[form](x), F.gelu(x, approximate=approximate),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("b,t,d,h", [(2, 50, 384, 6), (1, 197, 192, 3), (3, 1, 64, 2)])
def test_attention_matches_sdpa(b, t, d, h):
    qkv = torch.randn(b, t, 3 * d, **f64) * 2
    q, k, v = qkv.reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
    expected = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
    torch.testing.assert_close(reference.attention(qkv, h), expected, rtol=1e-10, atol=1e-12)


def test_patch_embedding_matches_conv2d():
    """im2col + linear in (c, ph, pw) order equals the strided convolution timm uses."""
    cfg = get_config("vit_tiny_patch16_224")
    images = torch.randn(2, 3, 224, 224, **f64)
    weight, bias = torch.randn(192, 3, 16, 16, **f64), torch.randn(192, **f64)
    ours = reference.linear(reference.patchify(images, 16), weight.reshape(192, -1), bias)
    conv = F.conv2d(images, weight, bias, stride=16).flatten(2).transpose(1, 2)
    assert ours.shape == (2, cfg.num_patches, 192)
    torch.testing.assert_close(ours, conv, rtol=1e-10, atol=1e-10)


def test_forward_matches_a_torch_nn_transformer():
    """The whole forward against one built from torch.nn.functional pieces, timm's way."""
    cfg = get_config("vit_test")
    w = {k: torch.from_numpy(v).double() for k, v in random_weights(cfg, seed=3).items()}
    images = torch.randn(2, 3, cfg.image_size, cfg.image_size, **f64)

    x = F.conv2d(images, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"],
                 stride=cfg.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([w["cls_token"].expand(2, -1, -1), x], 1) + w["pos_embed"]
    d, h = cfg.embed_dim, cfg.num_heads
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], cfg.ln_eps)
        q, k, v = F.linear(y, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]) \
            .reshape(2, -1, 3, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, -1, d)
        x = x + F.linear(y, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], cfg.ln_eps)
        y = F.gelu(F.linear(y, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]))
        x = x + F.linear(y, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
    x = F.layer_norm(x, (d,), w["norm.weight"], w["norm.bias"], cfg.ln_eps)[:, 0]
    expected = F.linear(x, w["head.weight"], w["head.bias"])
    torch.testing.assert_close(reference.forward(cfg, w, images), expected, rtol=1e-10,
                               atol=1e-10)


def test_flops_per_image_matches_the_published_figure():
    """ViT-S/32: 2.29 GFLOP per image (multiply-add = 2)."""
    assert math.isclose(get_config().flops_per_image() / 1e9, 2.29, abs_tol=0.005)


def test_the_class_token_only_block_is_row_zero_of_the_whole_block():
    """The last block runs for the class token alone: its row equals the whole block's row 0."""
    cfg = get_config("vit_test")
    w = {k: torch.from_numpy(v).double() for k, v in random_weights(cfg, seed=4).items()}
    x = torch.randn(3, cfg.num_tokens, cfg.embed_dim, **f64)
    whole = reference.block(cfg, w, 1, x)
    alone = reference.block(cfg, w, 1, x, class_token_only=True)
    assert alone.shape == (3, 1, cfg.embed_dim)
    torch.testing.assert_close(alone[:, 0], whole[:, 0], rtol=1e-12, atol=1e-12)
