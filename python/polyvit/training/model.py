"""The trainable ViT: the reference forward (polyvit.reference) as a torch.nn.Module.

Same ViTConfig, same parameter names as the shared weight format (timm's), so its state dict *is*
a polyvit checkpoint: export_weights() writes what polyvit.load reads on every backend, and
from_weights() starts training from any checkpoint polyvit imports. What training adds:

- autograd, and F.scaled_dot_product_attention for the attention (flash or memory-efficient
  kernels where the device has them; the reference writes softmax(q k^T) v out by hand);
- dropout after the attention and MLP projections and on the attention probabilities, and
  stochastic depth (drop-path) on each residual branch; all off in eval mode, where the logits
  equal the reference's to fp32 parity (tests/test_training_model.py);
- timm's initialisation for training from scratch.

Shapes: B batch, T tokens, D width, H heads, hd head dim, M MLP width, P patch, C channels.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ViTConfig
from ..reference import patchify
from ..weights import expected_shapes, validate


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a whole sample with probability p, scaling
    the kept ones by 1 / (1 - p) so the expectation is unchanged (Huang et al. 2016)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, N, D): a P x P stride-P convolution, with the patch norms of the
    seed layout (norm_pre over each flattened patch, norm after the projection) when configured."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.patch_norm_pre:
            self.norm_pre = nn.LayerNorm(cfg.patch_dim, eps=cfg.ln_eps)
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        if cfg.patch_norm_post:
            self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.patch_norm_pre:  # the norm needs the flattened patches: im2col, then a matmul
            x = self.norm_pre(patchify(images, cfg.patch_size))
            x = F.linear(x, self.proj.weight.reshape(cfg.embed_dim, -1), self.proj.bias)
        else:  # the convolution is the same matmul without materialising the patches
            x = self.proj(images).flatten(2).transpose(1, 2)
        return self.norm(x) if cfg.patch_norm_post else x


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # qkv rows are q | k | v, each head-major: the packing reference.attention unpacks
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads) \
            .permute(2, 0, 3, 1, 4)                                   # each (B, H, T, hd)
        p = self.attn_drop if self.training else 0.0
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # bf16 autocast on a CPU: torch's SDPA kernel is slower than the three ops written
            # out (a ViT-S/32 training step: 1.13 s vs 0.89 s, benchmarks/bench_train.py)
            probs = F.dropout(torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5,
                                            dim=-1), p)
            out = probs @ v
        else:  # flash or memory-efficient kernels where the device has them
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, T, hd)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_dim)
        self.act = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.embed_dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm1(x)), then + mlp(norm2(x)), each branch drop-path'd."""

    def __init__(self, cfg: ViTConfig, drop: float, attn_drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.attn = Attention(cfg, attn_drop, drop)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg, drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TrainableViT(nn.Module):
    """The ViT of `cfg` with autograd. forward(images) -> logits; features(images) -> the
    pre-logits embedding (class token after the final norm), as Model.forward_features gives."""

    def __init__(self, cfg: ViTConfig, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        for name, value in (("drop", drop), ("attn_drop", attn_drop), ("drop_path", drop_path)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, d))
        self.pos_drop = nn.Dropout(drop)
        # stochastic depth rising linearly with depth, as in DeiT and timm
        rates = [drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, drop, attn_drop, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.head = nn.Linear(d, cfg.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT initialisation: truncated normal (std 0.02) for the linear layers and the
        position embedding, a near-zero class token, zero biases, unit norms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # the patch projection as the linear layer it is (fan-in C*P*P): LeCun normal
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w, std=1.0 / math.sqrt(self.cfg.patch_dim))
        nn.init.zeros_(self.patch_embed.proj.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D): the class token after the final norm."""
        x = self.patch_embed(images)                                   # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    # ---- the shared weight format ---------------------------------------------------------------

    @classmethod
    def from_weights(cls, cfg: ViTConfig, tensors: Mapping[str, np.ndarray],
                     **dropout: float) -> "TrainableViT":
        """A model holding `tensors` (shared-format names and shapes, validated)."""
        validate(cfg, tensors, source="weights")
        model = cls(cfg, **dropout)
        model.load_weights(tensors)
        return model

    def load_weights(self, tensors: Mapping[str, np.ndarray]) -> None:
        state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
                 for k, v in tensors.items()}
        self.load_state_dict(state, strict=True)

    def export_weights(self) -> dict[str, np.ndarray]:
        """float32 arrays in the shared format's key names (what polyvit.weights.save writes)."""
        state = self.state_dict()
        out = {k: state[k].detach().to("cpu", torch.float32).numpy().copy()
               for k in expected_shapes(self.cfg)}
        if len(out) != len(state):
            extra = sorted(set(state) - set(out))
            raise RuntimeError(f"parameters outside the weight format: {extra}")
        return out


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Parameters trained without weight decay: norms' scales and every bias (1-D), the class
    token and the position embedding (decaying them only pulls embeddings toward zero)."""
    return param.ndim <= 1 or name in ("cls_token", "pos_embed")
