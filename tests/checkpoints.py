"""Checkpoints written exactly as each release stores them, from seeded weights, and a forward
pass written in each release's own conventions (the "model built directly from the weights")
to compare an import against. Nothing here uses polyvit's importers or reference."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- seeded native weights ---------------------------------------------------------------------


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter a seeded, non-trivial value (biases and norms included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if p.ndim == 1 and name.endswith("weight"):  # a norm's scale
                value = 1 + 0.1 * noise
            elif name.endswith("bias"):
                value = 0.1 * noise
            elif p.ndim == 2 or p.ndim == 4:  # linear or conv kernel
                value = noise / math.sqrt(math.prod(p.shape[1:]))
            else:  # class token, position embedding
                value = 0.2 * noise
            p.copy_(value.to(p.dtype))
    return module


def flax_vit_arrays(dim: int, depth: int, heads: int, mlp: int, patch: int, grid: int,
                    classes: int, seed: int, big_vision: bool = False) -> dict[str, np.ndarray]:
    """Random weights in flax's layout and key names (no prefix, blocks unstacked)."""
    rng = np.random.default_rng(seed)
    hd = dim // heads

    def kernel(*shape, fan_in):
        return (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32)

    def vec(n, base=0.0):
        return (base + 0.1 * rng.standard_normal(n)).astype(np.float32)

    mha, mlp_name, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") \
        if big_vision else ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    a = {
        "embedding/kernel": kernel(patch, patch, 3, dim, fan_in=3 * patch * patch),
        "embedding/bias": vec(dim),
        "cls": (0.2 * rng.standard_normal((1, 1, dim))).astype(np.float32),
        "Transformer/encoder_norm/scale": vec(dim, 1.0),
        "Transformer/encoder_norm/bias": vec(dim),
        "head/kernel": kernel(dim, classes, fan_in=dim),
        "head/bias": vec(classes),
    }
    positions = grid * grid if big_vision else grid * grid + 1
    pos_key = "pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"
    a[pos_key] = (0.2 * rng.standard_normal((1, positions, dim))).astype(np.float32)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        a[b + "LayerNorm_0/scale"], a[b + "LayerNorm_0/bias"] = vec(dim, 1.0), vec(dim)
        for n in ("query", "key", "value"):
            a[b + f"{mha}/{n}/kernel"] = kernel(dim, heads, hd, fan_in=dim)
            a[b + f"{mha}/{n}/bias"] = (0.1 * rng.standard_normal((heads, hd))).astype(np.float32)
        a[b + f"{mha}/out/kernel"] = kernel(heads, hd, dim, fan_in=dim)
        a[b + f"{mha}/out/bias"] = vec(dim)
        a[b + f"{ln2}/scale"], a[b + f"{ln2}/bias"] = vec(dim, 1.0), vec(dim)
        a[b + f"{mlp_name}/Dense_0/kernel"] = kernel(dim, mlp, fan_in=dim)
        a[b + f"{mlp_name}/Dense_0/bias"] = vec(mlp)
        a[b + f"{mlp_name}/Dense_1/kernel"] = kernel(mlp, dim, fan_in=mlp)
        a[b + f"{mlp_name}/Dense_1/bias"] = vec(dim)
    return a


def stack_blocks(a: dict[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    """big_vision's scanned layout: encoderblock_{i}/X -> encoderblock/X with a depth axis."""
    out = {k: v for k, v in a.items() if "encoderblock_" not in k}
    for k in a:
        if k.startswith("Transformer/encoderblock_0/"):
            name = k[len("Transformer/encoderblock_0/"):]
            out["Transformer/encoderblock/" + name] = np.stack(
                [a[f"Transformer/encoderblock_{i}/{name}"] for i in range(depth)])
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray], prefix: str = "") -> Path:
    np.savez(path, **{prefix + k: v for k, v in arrays.items()})
    return path


# ---- forwards in each release's conventions ----------------------------------------------------


def _ln(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def flax_forward(a: dict[str, np.ndarray], images: np.ndarray, depth: int,
                 big_vision: bool = False, eps: float = 1e-6) -> np.ndarray:
    """The flax ViT in float64 on NHWC images, with flax's kernel layouts (einsum over
    (D, H, hd) attention kernels) and tanh GELU; big_vision adds position embeddings to the
    patches before prepending the class token."""
    a = {k: v.astype(np.float64) for k, v in a.items()}
    x = images.astype(np.float64).transpose(0, 2, 3, 1)        # (B, H, W, C)
    k = a["embedding/kernel"]                                    # (P, P, C, D)
    p, d = k.shape[0], k.shape[3]
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = np.einsum("bgnijc,ijcd->bgnd", x, k) + a["embedding/bias"]
    x = x.reshape(b, -1, d)
    cls = np.broadcast_to(a["cls"], (b, 1, d))
    if big_vision:
        x = np.concatenate([cls, x + a["pos_embedding"]], axis=1)
    else:
        x = np.concatenate([cls, x], axis=1) + a["Transformer/posembed_input/pos_embedding"]
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") \
        if big_vision else ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    for i in range(depth):
        g = {kk[len(f"Transformer/encoderblock_{i}/"):]: v for kk, v in a.items()
             if kk.startswith(f"Transformer/encoderblock_{i}/")}
        y = _ln(x, g["LayerNorm_0/scale"], g["LayerNorm_0/bias"], eps)
        q, kk, v = (np.einsum("btd,dhk->bthk", y, g[f"{mha}/{n}/kernel"]) + g[f"{mha}/{n}/bias"]
                    for n in ("query", "key", "value"))
        s = np.einsum("bqhk,bshk->bhqs", q, kk) / math.sqrt(q.shape[-1])
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", s, v)
        x = x + np.einsum("bqhk,hkd->bqd", o, g[f"{mha}/out/kernel"]) + g[f"{mha}/out/bias"]
        y = _ln(x, g[f"{ln2}/scale"], g[f"{ln2}/bias"], eps)
        y = _gelu_tanh(y @ g[f"{mlp}/Dense_0/kernel"] + g[f"{mlp}/Dense_0/bias"])
        x = x + y @ g[f"{mlp}/Dense_1/kernel"] + g[f"{mlp}/Dense_1/bias"]
    x = _ln(x, a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"], eps)
    return x[:, 0] @ a["head/kernel"] + a["head/bias"]


# ---- the seed checkpoint's architecture (github.com/miguelmartin75/vit, vit/pt.py) -------------

class SeedAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class SeedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.msa = SeedAttention(dim, heads)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.0),
                                 nn.Linear(mlp, dim), nn.Dropout(0.0))

    def forward(self, x):
        x = self.msa(x) + x
        return self.mlp(x) + x


class SeedEncoder(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp: int):
        super().__init__()
        self.encoder = nn.Sequential(*[SeedBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.encoder(x))


class SeedViT(nn.Module):
    """Same parameters, key names and patch order as the released model class."""

    def __init__(self, patch=32, dim=384, depth=12, heads=6, mlp=1536, classes=1000, image=224):
        super().__init__()
        self.patch = patch
        patch_dim = 3 * patch * patch
        self.class_tok = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_emb = nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.patch_emb = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim),
                                       nn.LayerNorm(dim))
        self.classify_head = nn.Linear(dim, classes)
        self.transformer = SeedEncoder(depth, dim, heads, mlp)

    def forward(self, x):
        b, c, _, _ = x.shape
        p = self.patch
        x = x.unfold(2, p, p).unfold(3, p, p)              # (B, C, gh, gw, P, P)
        x = x.permute(0, 2, 3, 4, 5, 1).reshape(b, -1, p * p * c)  # patches in (ph, pw, c) order
        x = self.patch_emb(x)
        x = torch.cat([self.class_tok.expand(b, -1, -1), x], dim=1) + self.pos_emb
        return self.classify_head(self.transformer(x)[:, 0])


def seed_checkpoint(model: SeedViT, compiled: bool = False) -> dict:
    """What vit/pt.py's train() saves: model and optimizer state plus metrics."""
    prefix = "_orig_mod." if compiled else ""
    state = OrderedDict((prefix + k, v.detach().clone()) for k, v in model.state_dict().items())
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return {"model_state_dict": state, "optim_state_dict": optim.state_dict(),
            "top1": 67.7, "top5": 87.9, "iter": 1000, "loss": 1.5}


# ---- timm ---------------------------------------------------------------------------------------

def timm_state_dict(weights: dict[str, np.ndarray]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, torch.from_numpy(v.copy())) for k, v in weights.items())


def edit_json(path: Path, changes: dict) -> Path:
    """Set fields of a JSON file in place; a dotted key reaches into a nested object
    ("pretrained_cfg.input_size"). Recorded configs that disagree with their tensors."""
    data = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        target[key] = value
    path.write_text(json.dumps(data))
    return path


def write_timm_hub_folder(folder: Path, architecture: str, weights: dict[str, np.ndarray],
                          num_classes: int) -> Path:
    """model.safetensors + timm's config.json, as on the hub for timm models."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(dict(timm_state_dict(weights)), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "architecture": architecture, "num_classes": num_classes,
        "num_features": int(weights["norm.weight"].shape[0]), "global_pool": "token",
        "pretrained_cfg": {"tag": "augreg_in21k_ft_in1k", "custom_load": False,
                           "input_size": [3, 224, 224], "fixed_input_size": True,
                           "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
                           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                           "num_classes": num_classes, "pool_size": None,
                           "first_conv": "patch_embed.proj", "classifier": "head"}}))
    return folder
