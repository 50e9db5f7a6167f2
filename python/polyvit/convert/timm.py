"""timm state dicts of vit_*_patch*_224 models (.pth, .bin, .safetensors, or a hub folder).

timm's keys are the shared format's keys, so import is: unwrap, infer the config from shapes,
keep the tensors. A hub folder's config.json ("architecture", "pretrained_cfg") adds the name
and the preprocessing.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import TIMM_AUGREG, Preprocessing, ViTConfig
from ..errors import WeightsError
from .common import count_blocks, grid_from_tokens, infer_heads, named, require, strip_prefix

# Training checkpoints wrap the state dict; torch.compile and DataParallel prefix its keys.
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")
PREFIXES = ("_orig_mod.", "module.")
# Parts timm may save that carry no parameters of this architecture's forward pass.
IGNORED = ("fc_norm.", "norm_pre.")


def looks_like(state: Mapping[str, Any]) -> bool:
    return "patch_embed.proj.weight" in unwrap(state)


def unwrap(state: Mapping[str, Any]) -> dict[str, Any]:
    for key in WRAPPERS:
        if isinstance(state.get(key), Mapping):
            state = state[key]
            break
    state = dict(state)
    for prefix in PREFIXES:
        state = strip_prefix(state, prefix)
    return state


def convert(state: Mapping[str, np.ndarray], source: str, num_heads: int | None = None,
            hub_config: Mapping[str, Any] | None = None) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    state = unwrap(state)
    for prefix in IGNORED:
        found = [k for k in state if k.startswith(prefix)]
        if found and any(np.size(state[k]) for k in found):
            raise WeightsError(f"{source}: has {found[0]}: a timm variant with a norm this "
                               "architecture does not have (global-pool or CLIP-style ViT)")
    if "reg_token" in state or "cls_token" not in state:
        raise WeightsError(f"{source}: a timm ViT without a class token or with register tokens; "
                           "only class-token ViTs are supported")
    proj = require(state, "patch_embed.proj.weight", source)  # (D, C, P, P)
    dim, chans, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    grid = grid_from_tokens(require(state, "pos_embed", source).shape[1], True, source)
    depth = count_blocks(state, "blocks.", ".norm1.weight")
    if depth == 0:
        raise WeightsError(f"{source}: no transformer blocks (blocks.0.norm1.weight is missing)")
    heads = num_heads
    if heads is None and hub_config:  # timm hub configs may say it in model_args
        heads = (hub_config.get("model_args") or {}).get("num_heads")
    cfg = ViTConfig(
        image_size=grid * patch, patch_size=patch, in_chans=chans, embed_dim=dim, depth=depth,
        num_heads=infer_heads(dim, heads, source),
        mlp_dim=require(state, "blocks.0.mlp.fc1.weight", source).shape[0],
        num_classes=require(state, "head.weight", source).shape[0],
        ln_eps=1e-6, qkv_bias="blocks.0.attn.qkv.bias" in state,
        preprocessing=_preprocessing(hub_config))
    cfg = named(cfg)
    if hub_config and hub_config.get("architecture"):
        cfg = cfg.replace(name=str(hub_config["architecture"]))
    return cfg, {k: v for k, v in state.items() if not k.startswith(IGNORED)}


def _preprocessing(hub_config: Mapping[str, Any] | None) -> Preprocessing:
    pre = (hub_config or {}).get("pretrained_cfg") or {}
    if not pre:
        return TIMM_AUGREG
    interpolation = pre.get("interpolation", TIMM_AUGREG.interpolation)
    crop_mode = pre.get("crop_mode", "center")
    return Preprocessing(
        mean=tuple(pre.get("mean", TIMM_AUGREG.mean)), std=tuple(pre.get("std", TIMM_AUGREG.std)),
        resize="squash" if crop_mode == "squash" else "shorter",
        crop_pct=float(pre.get("crop_pct", TIMM_AUGREG.crop_pct)),
        interpolation=interpolation if interpolation in ("bicubic", "bilinear", "nearest")
        else TIMM_AUGREG.interpolation)
