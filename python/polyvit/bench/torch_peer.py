"""The idiomatic torch ViT every benchmark measures polyvit against: torch.nn modules laid out
as timm's VisionTransformer (Conv2d patch embedding, nn.LayerNorm, one fused qkv nn.Linear,
scaled_dot_product_attention, nn.GELU), so its state_dict keys are the shared weight format's
and a checkpoint loads with load_state_dict. This is what a torch user would deploy; the
readable float64 oracle is polyvit.reference, not this."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ViTConfig


def attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, 3D) packed q|k|v -> (B, T, D) through torch's fused attention."""
    b, t, three_d = qkv.shape
    d = three_d // 3
    q, k, v = qkv.reshape(b, t, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        p, d = cfg.patch_size, cfg.embed_dim
        self.patch_size = p
        # The seed checkpoint normalises each flattened patch before projecting it.
        self.norm_pre = nn.LayerNorm(cfg.patch_dim, cfg.ln_eps) if cfg.patch_norm_pre else None
        self.proj = nn.Conv2d(cfg.in_chans, d, p, stride=p)                   # weight (D, C, P, P)
        self.norm = nn.LayerNorm(d, cfg.ln_eps) if cfg.patch_norm_post else nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.norm_pre is None:
            x = self.proj(images).flatten(2).transpose(1, 2)                  # (B, N, D)
        else:  # unfold flattens in (c, ph, pw) order, the shared format's
            p = self.patch_size
            x = self.norm_pre(F.unfold(images, p, stride=p).transpose(1, 2))  # (B, N, C*P*P)
            x = F.linear(x, self.proj.weight.flatten(1), self.proj.bias)      # (B, N, D)
        return self.norm(x)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(d, 3 * d, bias=cfg.qkv_bias)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attention(self.qkv(x), self.num_heads))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        self.act = nn.GELU(approximate="none" if cfg.gelu == "erf" else "tanh")
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, cfg.ln_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, cfg.ln_eps)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, cfg.ln_eps)
        self.head = nn.Linear(d, cfg.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)                                          # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)                                                      # (B, T, D)
        return self.head(self.norm(x)[:, 0])                                  # (B, classes)


def vit(cfg: ViTConfig, weights: Mapping[str, np.ndarray],
        device: str | torch.device = "cpu") -> VisionTransformer:
    """The peer with these weights on `device`, in eval mode, without autograd."""
    with torch.device("meta"):  # skip the random init that load_state_dict would overwrite
        model = VisionTransformer(cfg)
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)
