"""Every token's final embedding, on any backend, through that backend's own kernels.

A backend's fused forward returns logits and runs the last block for the class token alone, so
it never holds the other tokens. forward_tokens() runs the same network op by op on the
backend's Ops (patch_embed, layernorm, linear with its fused epilogues, attention: the kernels
the op-level tests hold to the parity rule), as polyvit.reference.forward does, with the last
block whole and the final norm over every token: (B, T, D), token 0 the class token.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .backends.base import Ops
from .config import ViTConfig

POOLS = ("token", "mean")


def forward_tokens(ops: Ops, cfg: ViTConfig, w: Mapping[str, np.ndarray],
                   images: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, T, D) normed tokens, computed by `ops`."""
    b, d, t = images.shape[0], cfg.embed_dim, cfg.num_tokens
    eps = cfg.ln_eps
    if cfg.patch_norm_pre:  # the seed layout: LayerNorm over each flattened patch first
        g, p = cfg.grid_size, cfg.patch_size
        patches = images.reshape(b, cfg.in_chans, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
        patches = np.ascontiguousarray(patches.reshape(b * g * g, cfg.patch_dim))
        patches = ops.layernorm(patches, w["patch_embed.norm_pre.weight"],
                                w["patch_embed.norm_pre.bias"], eps)
        x = ops.linear(patches, w["patch_embed.proj.weight"].reshape(d, -1).copy(),
                       w["patch_embed.proj.bias"])
    else:
        x = ops.patch_embed(images, w["patch_embed.proj.weight"],
                            w["patch_embed.proj.bias"]).reshape(-1, d)        # (B*N, D)
    if cfg.patch_norm_post:
        x = ops.layernorm(x, w["patch_embed.norm.weight"], w["patch_embed.norm.bias"], eps)
    x = x.reshape(b, t - 1, d)
    cls = np.broadcast_to(w["cls_token"].reshape(1, 1, d), (b, 1, d))
    x = (np.concatenate([cls, x], axis=1) + w["pos_embed"]).astype(np.float32)  # (B, T, D)
    x = np.ascontiguousarray(x.reshape(b * t, d))
    gelu = f"gelu_{cfg.gelu}"
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = ops.layernorm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = ops.linear(h, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))
        a = ops.attention(qkv.reshape(b, t, 3 * d), cfg.num_heads).reshape(b * t, d)
        x = ops.linear(a, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"], "residual", x)
        h = ops.layernorm(x, w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = ops.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"], gelu)
        x = ops.linear(h, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"], "residual", x)
    x = ops.layernorm(x, w["norm.weight"], w["norm.bias"], eps)
    return x.reshape(b, t, d)


def pool(tokens: np.ndarray, how: str) -> np.ndarray:
    """(B, T, D) normed tokens -> (B, D): the class token ("token"), or the mean of the patch
    tokens ("mean", for checkpoints trained with average pooling)."""
    if how not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {how!r}")
    return tokens[:, 0] if how == "token" else tokens[:, 1:].mean(axis=1)
