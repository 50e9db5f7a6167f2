"""Helpers the importers share: safe readers, head-count rule, preset naming, and the check
that a recorded config agrees with the tensors it came with."""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

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


def count_blocks(keys: Any, pattern: str) -> int:
    """How many consecutive blocks `pattern.format(i)` exist, from 0."""
    keys = set(keys)
    depth = 0
    while pattern.format(depth) in keys:
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


# ---- recorded configs against the tensors ------------------------------------------------------

class ShapeKeys(NamedTuple):
    """Where a layout keeps the tensors whose shapes fix a config's sizes."""
    proj: str      # (D, C, P, P) patch projection
    pos: str       # (1, T, D) position embeddings, the class token's row first
    block: str     # a tensor every block has, "{}" standing for the block index
    fc1: str       # (M, D) block 0's first MLP layer
    head: str      # (K, D) classifier
    qkv_bias: str  # block 0's query (or fused qkv) bias: present exactly when qkv_bias


SHARED_KEYS = ShapeKeys("patch_embed.proj.weight", "pos_embed", "blocks.{}.norm1.weight",
                        "blocks.0.mlp.fc1.weight", "head.weight", "blocks.0.attn.qkv.bias")


class Fact(NamedTuple):
    """A config field's value as the tensors fix it, and the tensor that shows it."""
    value: Any
    evidence: str


class Claim(NamedTuple):
    """A config field's value as a recorded config states it, and how the config words it."""
    field: str
    value: Any
    text: str


# How each fact reads in an error: "..., but the tensors are 384 wide"
TENSORS_SAY = {
    "embed_dim": lambda v: f"are {v} wide",
    "in_chans": lambda v: f"take {v} input channels",
    "patch_size": lambda v: f"embed {v}x{v} patches",
    "image_size": lambda v: f"embed {v}x{v} images",
    "depth": lambda v: f"hold {v} blocks",
    "mlp_dim": lambda v: f"have an MLP {v} wide",
    "num_classes": lambda v: f"have {v} classes",
    "qkv_bias": lambda v: "have qkv biases" if v else "have no qkv biases",
}


def measure(tensors: Mapping[str, np.ndarray], keys: ShapeKeys, source: str) -> dict[str, Fact]:
    """Every config field the tensors' shapes and names fix (TENSORS_SAY's), with its evidence."""
    def shaped(key: str, ndim: int, form: str) -> tuple[np.ndarray, str]:
        array = require(tensors, key, source)
        shown = f"{key} has shape {tuple(array.shape)}"
        if array.ndim != ndim:
            raise WeightsError(f"{source}: {shown}, expected {form}")
        return array, shown

    proj, proj_shown = shaped(keys.proj, 4, "(D, C, P, P)")
    pos, pos_shown = shaped(keys.pos, 3, "(1, T, D)")
    fc1, fc1_shown = shaped(keys.fc1, 2, "(M, D)")
    head, head_shown = shaped(keys.head, 2, "(K, D)")
    dim, chans, patch = proj.shape[:3]
    grid = grid_from_tokens(pos.shape[1], True, source)
    depth = count_blocks(tensors, keys.block)
    if depth == 0:
        raise WeightsError(f"{source}: no transformer blocks ({keys.block.format(0)} is missing)")
    bias = keys.qkv_bias in tensors
    return {
        "embed_dim": Fact(dim, proj_shown),
        "in_chans": Fact(chans, proj_shown),
        "patch_size": Fact(patch, proj_shown),
        "image_size": Fact(grid * patch, f"{pos_shown}: a {grid}x{grid} grid of patches, "
                                         f"and {proj_shown}"),
        "depth": Fact(depth, f"{keys.block.format(0)} to {keys.block.format(depth - 1)}"),
        "mlp_dim": Fact(fc1.shape[0], fc1_shown),
        "num_classes": Fact(head.shape[0], head_shown),
        "qkv_bias": Fact(bias, f"{keys.qkv_bias} is {'present' if bias else 'absent'}"),
    }


def claims(config: Mapping[str, Any], fields: Mapping[str, str], prefix: str = "") -> list[Claim]:
    """A Claim for each key of `fields` (recorded key -> ViTConfig field) that `config` holds."""
    return [Claim(field, config[key], f"{prefix}{key} {config[key]!r}")
            for key, field in fields.items() if key in config]


def check_recorded(where: str, recorded: Iterable[Claim], facts: Mapping[str, Fact]) -> None:
    """Raise WeightsError naming every recorded value the tensors contradict, beside the value
    the tensors give and the tensor that gives it. A head count is checked as far as the tensors
    fix it: it must divide the width."""
    wrong = []
    for claim in recorded:
        if claim.field == "num_heads":
            width = facts["embed_dim"]
            heads = claim.value
            if not (type(heads) is int and heads > 0 and width.value % heads == 0):
                wrong.append(f"{claim.text}, but the tensors are {width.value} wide, which "
                             f"{heads!r} heads do not divide ({width.evidence})")
            continue
        fact = facts[claim.field]
        if claim.value != fact.value:
            wrong.append(f"{claim.text}, but the tensors {TENSORS_SAY[claim.field](fact.value)} "
                         f"({fact.evidence})")
    if wrong:
        raise WeightsError(f"{where} says " + "; it also says ".join(wrong)
                           + ". The recorded config does not describe these tensors: correct it, "
                             "or export the checkpoint again")


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
