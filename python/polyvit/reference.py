"""The reference ViT forward pass in torch: the spec every backend is tested against.

Short and explicit on purpose: each op is written out as math, not taken from torch.nn, so
what "LayerNorm" or "attention" means here is visible in a few lines. It runs in whatever dtype
its inputs have; the float64 run is the oracle of the parity suite.

Shapes: B batch, T tokens (patches + class token), D width, H heads, hd = D / H head dim,
M MLP width, P patch size, C input channels.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from .config import ViTConfig

# ---- ops (each also exposed to the op-level parity harness) -----------------------------------


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """(..., D) -> (..., D): normalise over the last axis with biased variance, then scale+shift."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU: x * Phi(x)."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU (the original JAX ViT's default)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


GELU = {"erf": gelu_erf, "tanh": gelu_tanh}


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(..., K) @ (N, K)^T + (N,) -> (..., N): weights in torch's (out, in) layout."""
    y = x @ weight.T
    return y if bias is None else y + bias


def attention(qkv: torch.Tensor, num_heads: int, queries: int | None = None,
              record: list | None = None) -> torch.Tensor:
    """(B, T, 3D) packed q|k|v -> (B, Q, D): softmax(q k^T / sqrt(hd)) v per (batch, head), for
    the first Q = queries tokens' queries (default all T) against every token's keys.
    record: a list the probabilities (B, H, Q, T) are appended to (attention maps)."""
    b, t, three_d = qkv.shape
    d = three_d // 3
    hd = d // num_heads
    q, k, v = qkv.reshape(b, t, 3, num_heads, hd).permute(2, 0, 3, 1, 4)  # each (B, H, T, hd)
    q = q[:, :, :queries]                                                 # (B, H, Q, hd)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)                    # (B, H, Q, T)
    scores = scores - scores.amax(dim=-1, keepdim=True)                   # stable softmax
    probs = scores.exp()
    probs = probs / probs.sum(dim=-1, keepdim=True)
    if record is not None:
        record.append(probs)
    out = probs @ v                                                       # (B, H, Q, hd)
    return out.transpose(1, 2).reshape(b, q.shape[2], d)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """im2col: (B, C, H, W) -> (B, H/P * W/P, C*P*P), patches row-major, each in (c, ph, pw) order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


# ---- the model ---------------------------------------------------------------------------------


def embed(cfg: ViTConfig, w: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, T, D): patch embedding, class token, position embedding."""
    x = patchify(images, cfg.patch_size)                                  # (B, N, C*P*P)
    if cfg.patch_norm_pre:
        x = layernorm(x, w["patch_embed.norm_pre.weight"], w["patch_embed.norm_pre.bias"],
                      cfg.ln_eps)
    proj = w["patch_embed.proj.weight"].reshape(cfg.embed_dim, -1)        # (D, C*P*P)
    x = linear(x, proj, w["patch_embed.proj.bias"])                       # (B, N, D)
    if cfg.patch_norm_post:
        x = layernorm(x, w["patch_embed.norm.weight"], w["patch_embed.norm.bias"], cfg.ln_eps)
    cls = w["cls_token"].expand(x.shape[0], 1, cfg.embed_dim)             # (B, 1, D)
    return torch.cat([cls, x], dim=1) + w["pos_embed"]                    # (B, T, D)


def block(cfg: ViTConfig, w: Mapping[str, torch.Tensor], i: int, x: torch.Tensor,
          class_token_only: bool = False, record: list | None = None) -> torch.Tensor:
    """One pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x)).

    class_token_only: return the class token's row alone, (B, 1, D). Its attention still reads
    every token's keys and values, but nothing else of the other rows is computed: the last
    block runs this way, since the head reads only the class token.
    """
    p = f"blocks.{i}."
    h = layernorm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], cfg.ln_eps)
    qkv = linear(h, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"))  # (B, T, 3D)
    queries = 1 if class_token_only else None
    x = x[:, :queries] + linear(attention(qkv, cfg.num_heads, queries, record), w[p + "attn.proj.weight"],
                                w[p + "attn.proj.bias"])                # (B, T or 1, D)
    h = layernorm(x, w[p + "norm2.weight"], w[p + "norm2.bias"], cfg.ln_eps)
    h = GELU[cfg.gelu](linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]))  # (B, T or 1, M)
    return x + linear(h, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])


def features(cfg: ViTConfig, w: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) preprocessed images -> (B, D) pre-logits: the class token after the norm."""
    x = embed(cfg, w, images)
    for i in range(cfg.depth):
        x = block(cfg, w, i, x, class_token_only=i == cfg.depth - 1)
    # LayerNorm is per token, so normalising only the class token equals timm's norm-then-pool.
    return layernorm(x[:, 0], w["norm.weight"], w["norm.bias"], cfg.ln_eps)  # (B, D)


def attention_maps(cfg: ViTConfig, w: Mapping[str, torch.Tensor],
                   images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, every block's attention probabilities (B, H, T, T)): every block runs for all
    tokens here (the last block too), so its map is whole; the logits are forward()'s."""
    maps: list[torch.Tensor] = []
    x = embed(cfg, w, images)
    for i in range(cfg.depth):
        x = block(cfg, w, i, x, record=maps)
    cls = layernorm(x[:, 0], w["norm.weight"], w["norm.bias"], cfg.ln_eps)
    return linear(cls, w["head.weight"], w["head.bias"]), maps


def forward(cfg: ViTConfig, w: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) preprocessed images -> (B, num_classes) logits."""
    return linear(features(cfg, w, images), w["head.weight"], w["head.bias"])
