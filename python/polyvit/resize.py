"""Run a checkpoint at another image size: resample its position embedding.

A ViT's weights fix the patch size but not the image size: only the position embedding has one
row per patch of the training grid. at_image_size() resizes that grid bicubically (with
antialiasing when it shrinks), keeping the class token's row, as timm's resample_abs_pos_embed
does, and returns the config for the new size; every backend then runs it like any other
checkpoint. Changing the patch size is not a resampling: it is refused.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .config import ViTConfig
from .errors import ConfigError, WeightsError


def check_image_size(cfg: ViTConfig, image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    p = cfg.patch_size
    if image_size % p:
        lower, upper = image_size // p * p, (image_size // p + 1) * p
        near = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(f"image size {image_size} is not a multiple of the patch size {p} of "
                          f"{cfg.name}; use {near} (the patch size itself cannot change: it is "
                          "baked into the patch embedding's weights)")


def resample_pos_embed(pos_embed: np.ndarray, new_grid: int, prefix_tokens: int = 1) -> np.ndarray:
    """(1, prefix + g*g, D) -> (1, prefix + new_grid**2, D): the g x g grid resized bicubically
    (antialiased when shrinking), the prefix (class token) rows kept."""
    import torch
    import torch.nn.functional as F

    pos_embed = np.asarray(pos_embed, dtype=np.float32)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise WeightsError(f"pos_embed has shape {pos_embed.shape}, expected (1, tokens, width)")
    patches = pos_embed.shape[1] - prefix_tokens
    old_grid = math.isqrt(max(patches, 0))
    if patches <= 0 or old_grid * old_grid != patches:
        raise WeightsError(f"pos_embed has {patches} patch positions (after {prefix_tokens} class "
                           "token), not a square grid; it cannot be resampled to another size")
    if new_grid == old_grid:
        return pos_embed
    d = pos_embed.shape[-1]
    grid = torch.from_numpy(pos_embed[:, prefix_tokens:]).reshape(1, old_grid, old_grid, d)
    grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(new_grid, new_grid), mode="bicubic",
                         align_corners=False, antialias=new_grid < old_grid)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, d).numpy()
    return np.concatenate([pos_embed[:, :prefix_tokens], grid], axis=1).astype(np.float32)


def at_image_size(cfg: ViTConfig, tensors: Mapping[str, np.ndarray], image_size: int
                  ) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """(config, weights) of the same checkpoint at `image_size` (resampled position embedding)."""
    check_image_size(cfg, image_size)
    out = dict(tensors)
    if image_size != cfg.image_size:
        out["pos_embed"] = resample_pos_embed(tensors["pos_embed"], image_size // cfg.patch_size)
    name = cfg.name if image_size == cfg.image_size else f"{cfg.name}@{image_size}"
    return cfg.replace(image_size=image_size, name=name), out
