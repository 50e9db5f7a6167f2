"""The ViT-S/32 ImageNet-1k checkpoint of github.com/miguelmartin75/vit (vit/pt.py, class ViT).

A torch.save dict with "model_state_dict" (keys prefixed "_orig_mod." when the model was
compiled). Its patch embedding is LayerNorm(C*P*P) -> Linear(C*P*P, D) -> LayerNorm(D) over
patches flattened in (ph, pw, c) order; here that order becomes the canonical (c, ph, pw), so
the Linear becomes a conv-shaped (D, C, P, P) weight like every other layout's.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import SQUASH_BILINEAR, ViTConfig
from ..errors import WeightsError
from .common import count_blocks, grid_from_tokens, infer_heads, named, require, strip_prefix

SEED_EPS = 1e-5  # torch.nn.LayerNorm's default, which vit/pt.py never changes


def unwrap(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    state = ckpt.get("model_state_dict", ckpt)
    if not isinstance(state, Mapping):
        raise WeightsError("model_state_dict is not a mapping of tensors")
    return strip_prefix(state, "_orig_mod.")


def looks_like(ckpt: Mapping[str, Any]) -> bool:
    state = ckpt.get("model_state_dict", ckpt)
    return isinstance(state, Mapping) and any(
        k.endswith("patch_emb.1.weight") or k.endswith("class_tok") for k in state)


def convert(state: Mapping[str, np.ndarray], source: str,
            num_heads: int | None = None) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    s = unwrap(state)
    linear = require(s, "patch_emb.1.weight", source)       # (D, P*P*C), columns in (ph, pw, c)
    dim, patch_dim = linear.shape
    chans = 3
    patch = int(round((patch_dim / chans) ** 0.5))
    if patch * patch * chans != patch_dim:
        raise WeightsError(f"{source}: patch_emb.1.weight has {patch_dim} inputs, not 3*P*P")
    pos = require(s, "pos_emb", source)                      # (1, T, D)
    grid = grid_from_tokens(pos.shape[1], True, source)
    depth = count_blocks(s, "transformer.encoder.{}.msa.norm.weight")
    if depth == 0:
        raise WeightsError(f"{source}: no transformer blocks (transformer.encoder.0 is missing)")
    cfg = named(ViTConfig(
        image_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
        num_heads=infer_heads(dim, num_heads, source),
        mlp_dim=require(s, "transformer.encoder.0.mlp.1.weight", source).shape[0],
        num_classes=require(s, "classify_head.weight", source).shape[0],
        ln_eps=SEED_EPS, qkv_bias=False, patch_norm_pre=True, patch_norm_post=True,
        preprocessing=SQUASH_BILINEAR))

    def to_c_ph_pw(v: np.ndarray) -> np.ndarray:
        """A (..., P*P*C) axis in (ph, pw, c) order -> (..., C, P, P)."""
        lead = v.shape[:-1]
        v = v.reshape(*lead, patch, patch, chans)
        return np.moveaxis(v, -1, -3)

    w = {
        "patch_embed.norm_pre.weight": to_c_ph_pw(require(s, "patch_emb.0.weight", source)).reshape(-1),
        "patch_embed.norm_pre.bias": to_c_ph_pw(require(s, "patch_emb.0.bias", source)).reshape(-1),
        "patch_embed.proj.weight": to_c_ph_pw(linear),           # (D, C, P, P)
        "patch_embed.proj.bias": require(s, "patch_emb.1.bias", source),
        "patch_embed.norm.weight": require(s, "patch_emb.2.weight", source),
        "patch_embed.norm.bias": require(s, "patch_emb.2.bias", source),
        "cls_token": require(s, "class_tok", source),
        "pos_embed": pos,
        "norm.weight": require(s, "transformer.norm.weight", source),
        "norm.bias": require(s, "transformer.norm.bias", source),
        "head.weight": require(s, "classify_head.weight", source),
        "head.bias": require(s, "classify_head.bias", source),
    }
    for i in range(depth):
        t, b = f"transformer.encoder.{i}.", f"blocks.{i}."
        for src, dst in (("msa.norm", "norm1"), ("msa.qkv", "attn.qkv"), ("msa.proj", "attn.proj"),
                         ("mlp.0", "norm2"), ("mlp.1", "mlp.fc1"), ("mlp.4", "mlp.fc2")):
            w[f"{b}{dst}.weight"] = require(s, f"{t}{src}.weight", source)
            if src != "msa.qkv":  # vit/pt.py builds qkv with bias=False
                w[f"{b}{dst}.bias"] = require(s, f"{t}{src}.bias", source)
    return cfg, {k: np.ascontiguousarray(v) for k, v in w.items()}
