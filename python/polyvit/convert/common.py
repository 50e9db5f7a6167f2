"""Helpers the importers share: safe readers, head-count rule, preset naming."""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..config import PRESETS, ViTConfig
from ..errors import WeightsError, WeightsNotFoundError

HEAD_DIM = 64  # the ViT family's rule where a checkpoint does not record its head count


def infer_heads(dim: int, num_heads: int | None, source: str) -> int:
    if num_heads is not None:
        if dim % num_heads:
            raise WeightsError(f"{source}: width {dim} is not divisible by num_heads={num_heads}")
        return num_heads
    if dim % HEAD_DIM:
        raise WeightsError(f"{source}: the checkpoint does not record its head count and width "
                           f"{dim} is not a multiple of {HEAD_DIM}; pass num_heads (--num-heads)")
    return dim // HEAD_DIM


def grid_from_tokens(num_positions: int, has_class_token: bool, source: str) -> int:
    patches = num_positions - (1 if has_class_token else 0)
    grid = math.isqrt(max(patches, 0))
    if grid * grid != patches or grid == 0:
        raise WeightsError(f"{source}: {num_positions} position embeddings do not form a square "
                           "patch grid; only square images are supported")
    return grid


SHAPE_FIELDS = ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                "mlp_dim", "num_classes")
FLAG_FIELDS = ("ln_eps", "qkv_bias", "patch_norm_pre", "patch_norm_post", "gelu")


def named(cfg: ViTConfig) -> ViTConfig:
    """Name a config after the preset it equals, or after the preset of its shapes plus the flags
    that differ (e.g. vit_base_patch16_224-gelu_tanh), or after its shapes alone."""
    same_shape = [p for p in PRESETS.values()
                  if all(getattr(p, f) == getattr(cfg, f) for f in SHAPE_FIELDS)]
    for preset in same_shape:
        if all(getattr(preset, f) == getattr(cfg, f) for f in FLAG_FIELDS):
            return cfg.replace(name=preset.name)
    if same_shape:
        preset = same_shape[0]
        flags = [f"{f}_{getattr(cfg, f)}" for f in FLAG_FIELDS
                 if getattr(preset, f) != getattr(cfg, f)]
        return cfg.replace(name="-".join([preset.name, *flags]))
    return cfg.replace(name=f"vit_d{cfg.embed_dim}_depth{cfg.depth}_patch{cfg.patch_size}_"
                            f"{cfg.image_size}")


def count_blocks(keys: Any, prefix: str, suffix: str) -> int:
    """How many consecutive blocks `{prefix}{i}{suffix}` exist, from 0."""
    keys = set(keys)
    depth = 0
    while f"{prefix}{depth}{suffix}" in keys:
        depth += 1
    return depth


def require(tensors: Mapping[str, np.ndarray], key: str, source: str) -> np.ndarray:
    try:
        return tensors[key]
    except KeyError:
        raise WeightsError(f"{source}: missing tensor {key}; the checkpoint is incomplete or "
                           "not of the layout it looks like") from None


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


# ---- readers -----------------------------------------------------------------------------------

def check_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"{path}: no such file or folder")
    return path


def sniff(path: Path) -> str:
    """'safetensors', 'npz', 'torch' (zip or legacy pickle) or 'unknown', from the bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            raise WeightsError(f"{path}: a damaged zip archive (truncated download?); "
                               "download it again") from None
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "unknown"
    if head[:1] == b"\x80":  # pickle protocol 2+: torch's legacy format or a plain pickle
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        return "safetensors"
    return "unknown"


def load_pickle(path: Path) -> Any:
    """torch.load with weights_only=True: a checkpoint can never run code."""
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: reading a pickled checkpoint needs torch "
                           "(pip install torch); safetensors and npz files do not") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(f"{path}: refused to unpickle: it holds objects other than tensors "
                           f"and plain containers, so it is not a checkpoint polyvit will load "
                           f"(checkpoints are read with weights_only=True). {first}") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: cannot read the pickled checkpoint ({exc}); it is truncated "
                           "or corrupt; download it again") from None


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: cannot read the .npz archive ({exc}); it is truncated, "
                           "corrupt, or holds pickled objects") from None


def tensors_to_numpy(state: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """float32 numpy arrays from a state dict of torch tensors or arrays; others are skipped."""
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().to("cpu")
            if not value.is_floating_point():
                continue
            import torch

            out[key] = value.to(torch.float32).numpy()
        elif isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
            out[key] = value.astype(np.float32, copy=False)
    if not out:
        raise WeightsError(f"{source}: holds no floating-point tensors; it is not a checkpoint")
    return out
