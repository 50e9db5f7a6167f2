"""JAX .npz checkpoints: google-research/vision_transformer (AugReg) and big_vision.

AugReg keys:    [opt/target/]Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel
big_vision:     params/Transformer/encoderblock/MultiHeadDotProductAttention_0/... (blocks stacked
                on a leading depth axis), MlpBlock_0, LayerNorm_0/1, params/pos_embedding.
Flax stores Dense kernels as (in, out), attention kernels as (D, H, hd) / (H, hd, D) and the
patch conv as (P, P, C, D); they become torch's (out, in) and (D, C, P, P) here. Flax's nn.gelu
defaults to the tanh approximation, which both codebases use, so imports get gelu="tanh".
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..config import TIMM_AUGREG, ViTConfig
from ..errors import WeightsError
from .common import count_blocks, grid_from_tokens, named, require


def layout(arrays: Mapping[str, np.ndarray]) -> str | None:
    """'augreg', 'big_vision', or None when the arrays are not a JAX ViT checkpoint."""
    return _prefix_and_layout(arrays)[1]


def _prefix_and_layout(arrays: Mapping[str, np.ndarray]) -> tuple[str, str | None]:
    """(key prefix, layout)."""
    if "params/embedding/kernel" in arrays:
        return "params/", "big_vision"
    for prefix in ("", "opt/target/"):
        if f"{prefix}embedding/kernel" in arrays:
            return prefix, "augreg"
    return "", None


def convert(arrays: Mapping[str, np.ndarray], source: str,
            num_heads: int | None = None) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    prefix, kind = _prefix_and_layout(arrays)
    if kind is None:
        raise WeightsError(f"{source}: an .npz without embedding/kernel: not a ViT checkpoint")
    a = {k[len(prefix):]: np.asarray(v, dtype=np.float32) for k, v in arrays.items()
         if k.startswith(prefix)}
    if "pre_logits/kernel" in a:
        raise WeightsError(f"{source}: has a pre_logits representation layer (an original "
                           "in21k checkpoint); only checkpoints without it are supported")
    if "cls" not in a:
        raise WeightsError(f"{source}: has no class token (a global-average-pooled ViT); only "
                           "class-token ViTs are supported")
    big = kind == "big_vision"
    stacked = "Transformer/encoderblock/LayerNorm_0/scale" in a
    mha, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if big \
        else ("MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")

    if stacked:
        depth = require(a, "Transformer/encoderblock/LayerNorm_0/scale", source).shape[0]

        def get(i: int, name: str) -> np.ndarray:
            return require(a, f"Transformer/encoderblock/{name}", source)[i]
    else:
        depth = count_blocks(a, "Transformer/encoderblock_{}/LayerNorm_0/scale")

        def get(i: int, name: str) -> np.ndarray:
            return require(a, f"Transformer/encoderblock_{i}/{name}", source)
    if depth == 0:
        raise WeightsError(f"{source}: no encoder blocks found")

    kernel = require(a, "embedding/kernel", source)          # (P, P, C, D)
    patch, chans, dim = kernel.shape[0], kernel.shape[2], kernel.shape[3]
    # big_vision adds position embeddings to the patches only; the AugReg code includes the class
    # token's position. Giving the class token a zero position embedding makes both one layout.
    if big:
        pos = require(a, "pos_embedding", source)            # (1, N, D)
        grid = grid_from_tokens(pos.shape[1], False, source)
        pos = np.concatenate([np.zeros((1, 1, dim), np.float32), pos], axis=1)
    else:
        pos = require(a, "Transformer/posembed_input/pos_embedding", source)  # (1, T, D)
        grid = grid_from_tokens(pos.shape[1], True, source)
    query = get(0, f"{mha}/query/kernel")                    # (D, H, hd)
    heads = query.shape[1]
    if num_heads is not None and num_heads != heads:
        raise WeightsError(f"{source}: the checkpoint has {heads} heads; num_heads={num_heads} "
                           "contradicts it")
    head_kernel = require(a, "head/kernel", source)          # (D, classes)
    cfg = named(ViTConfig(
        image_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
        num_heads=heads, mlp_dim=get(0, f"{mlp}/Dense_0/kernel").shape[1],
        num_classes=head_kernel.shape[1], ln_eps=1e-6, qkv_bias=True, gelu="tanh",
        preprocessing=TIMM_AUGREG))

    w = {
        "patch_embed.proj.weight": kernel.transpose(3, 2, 0, 1),
        "patch_embed.proj.bias": require(a, "embedding/bias", source),
        "cls_token": require(a, "cls", source).reshape(1, 1, dim),
        "pos_embed": pos,
        "norm.weight": require(a, "Transformer/encoder_norm/scale", source),
        "norm.bias": require(a, "Transformer/encoder_norm/bias", source),
        "head.weight": head_kernel.T,
        "head.bias": require(a, "head/bias", source),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        w[b + "norm1.weight"] = get(i, "LayerNorm_0/scale")
        w[b + "norm1.bias"] = get(i, "LayerNorm_0/bias")
        # (D, H, hd) -> (D, D) -> transposed to (out, in); q, k, v stacked on the out axis
        w[b + "attn.qkv.weight"] = np.concatenate(
            [get(i, f"{mha}/{n}/kernel").reshape(dim, dim).T for n in ("query", "key", "value")])
        w[b + "attn.qkv.bias"] = np.concatenate(
            [get(i, f"{mha}/{n}/bias").reshape(dim) for n in ("query", "key", "value")])
        w[b + "attn.proj.weight"] = get(i, f"{mha}/out/kernel").reshape(dim, dim).T  # (H,hd,D)
        w[b + "attn.proj.bias"] = get(i, f"{mha}/out/bias")
        w[b + "norm2.weight"] = get(i, f"{ln2}/scale")
        w[b + "norm2.bias"] = get(i, f"{ln2}/bias")
        for j, fc in ((0, "fc1"), (1, "fc2")):
            w[b + f"mlp.{fc}.weight"] = get(i, f"{mlp}/Dense_{j}/kernel").T
            w[b + f"mlp.{fc}.bias"] = get(i, f"{mlp}/Dense_{j}/bias")
    return cfg, {k: np.ascontiguousarray(v) for k, v in w.items()}
