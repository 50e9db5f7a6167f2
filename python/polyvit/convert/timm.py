"""timm state dicts of vit_*_patch*_224 models (.pth, .bin, .safetensors, or a hub folder).

timm's keys are the shared format's keys, so import is: unwrap, infer the config from shapes,
keep the tensors. A hub folder's config.json ("architecture", "pretrained_cfg") adds the name
and the preprocessing.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import PRESETS, TIMM_AUGREG, Preprocessing, ViTConfig
from ..errors import WeightsError
from .common import (SHARED_KEYS, Claim, check_recorded, claims, infer_heads, measure, named,
                     strip_prefix)

# Training checkpoints wrap the state dict; torch.compile and DataParallel prefix its keys.
WRAPPERS = ("state_dict_ema", "model_ema", "state_dict", "model")
PREFIXES = ("_orig_mod.", "module.")
# Parts timm may save that carry no parameters of this architecture's forward pass.
IGNORED = ("fc_norm.", "norm_pre.")
# A hub config.json's keys that the tensors can contradict, and the ViTConfig field each one sets
CHECKED = {"num_classes": "num_classes", "num_features": "embed_dim"}
CHECKED_MODEL_ARGS = {"img_size": "image_size", "patch_size": "patch_size", "in_chans": "in_chans",
                      "embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads",
                      "qkv_bias": "qkv_bias", "num_classes": "num_classes"}
PRESET_SIZES = ("image_size", "patch_size", "embed_dim", "depth", "mlp_dim")


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
            hub_config: Mapping[str, Any] | None = None,
            config_source: str = "config.json") -> tuple[ViTConfig, dict[str, np.ndarray]]:
    state = unwrap(state)
    for prefix in IGNORED:
        found = [k for k in state if k.startswith(prefix)]
        if found and any(np.size(state[k]) for k in found):
            raise WeightsError(f"{source}: has {found[0]}: a timm variant with a norm this "
                               "architecture does not have (global-pool or CLIP-style ViT)")
    if "reg_token" in state or "cls_token" not in state:
        raise WeightsError(f"{source}: a timm ViT without a class token or with register tokens; "
                           "only class-token ViTs are supported")
    facts = measure(state, SHARED_KEYS, source)
    if hub_config:
        check_recorded(config_source, _hub_claims(hub_config, facts["embed_dim"].value), facts)
    heads = num_heads
    if heads is None and hub_config:  # timm hub configs may say it in model_args
        heads = (hub_config.get("model_args") or {}).get("num_heads")
    cfg = ViTConfig(
        **{field: fact.value for field, fact in facts.items()},
        num_heads=infer_heads(facts["embed_dim"].value, heads, source),
        ln_eps=1e-6, preprocessing=_preprocessing(hub_config))
    cfg = named(cfg)
    if hub_config and hub_config.get("architecture"):
        cfg = cfg.replace(name=str(hub_config["architecture"]))
    return cfg, {k: v for k, v in state.items() if not k.startswith(IGNORED)}


def _hub_claims(hub_config: Mapping[str, Any], width: int) -> list[Claim]:
    """What a timm hub config.json states about the sizes: directly, in model_args, in
    pretrained_cfg, and through an architecture name that is one of the presets."""
    recorded = claims(hub_config, CHECKED)
    args = hub_config.get("model_args") or {}
    recorded += claims(args, CHECKED_MODEL_ARGS, "model_args.")
    if "mlp_ratio" in args:  # relative to the width the tensors have, so that only one is blamed
        recorded.append(Claim("mlp_dim", args["mlp_ratio"] * width,
                              f"model_args.mlp_ratio {args['mlp_ratio']!r}"))
    pre = hub_config.get("pretrained_cfg") or {}
    recorded += claims(pre, {"num_classes": "num_classes"}, "pretrained_cfg.")
    size = pre.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:  # (C, H, W)
        text = f"pretrained_cfg.input_size {list(size)}"
        recorded.append(Claim("in_chans", size[0], text))
        recorded.append(Claim("image_size", size[1] if size[1] == size[2] else tuple(size[1:]),
                              text))
    preset = PRESETS.get(str(hub_config.get("architecture")))
    if preset is not None:
        recorded += [Claim(field, getattr(preset, field), f"architecture {preset.name!r} "
                                                           f"({field} {getattr(preset, field)})")
                     for field in PRESET_SIZES]
    return recorded


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
