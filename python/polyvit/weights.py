"""The shared weight format: one .safetensors file every backend reads.

Keys are timm's names verbatim; the ViTConfig rides along as JSON in the file's metadata.
weights/README.md is the human-readable spec of this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .config import ViTConfig
from .errors import ConfigError, WeightsError, WeightsNotFoundError
from .files import atomic_path

FORMAT_NAME = "polyvit"
FORMAT_VERSION = "1"
STORAGE_DTYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": "bfloat16"}

Weights = dict[str, np.ndarray]


def expected_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a config needs, in forward order, with its shape."""
    d, m, t, p, c = cfg.embed_dim, cfg.mlp_dim, cfg.num_tokens, cfg.patch_size, cfg.in_chans
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.patch_norm_pre:  # over a flattened patch, in (c, ph, pw) order
        shapes["patch_embed.norm_pre.weight"] = (cfg.patch_dim,)
        shapes["patch_embed.norm_pre.bias"] = (cfg.patch_dim,)
    shapes["patch_embed.proj.weight"] = (d, c, p, p)
    shapes["patch_embed.proj.bias"] = (d,)
    if cfg.patch_norm_post:
        shapes["patch_embed.norm.weight"] = (d,)
        shapes["patch_embed.norm.bias"] = (d,)
    shapes["cls_token"] = (1, 1, d)
    shapes["pos_embed"] = (1, t, d)
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        shapes[b + "norm1.weight"] = (d,)
        shapes[b + "norm1.bias"] = (d,)
        shapes[b + "attn.qkv.weight"] = (3 * d, d)  # rows: q, k, v; each head-major
        if cfg.qkv_bias:
            shapes[b + "attn.qkv.bias"] = (3 * d,)
        shapes[b + "attn.proj.weight"] = (d, d)
        shapes[b + "attn.proj.bias"] = (d,)
        shapes[b + "norm2.weight"] = (d,)
        shapes[b + "norm2.bias"] = (d,)
        shapes[b + "mlp.fc1.weight"] = (m, d)
        shapes[b + "mlp.fc1.bias"] = (m,)
        shapes[b + "mlp.fc2.weight"] = (d, m)
        shapes[b + "mlp.fc2.bias"] = (d,)
    shapes["norm.weight"] = (d,)
    shapes["norm.bias"] = (d,)
    shapes["head.weight"] = (cfg.num_classes, d)
    shapes["head.bias"] = (cfg.num_classes,)
    return shapes


def validate(cfg: ViTConfig, weights: Mapping[str, np.ndarray], source: str = "weights") -> None:
    """Raise WeightsError naming every missing or unexpected key, a wrong shape, or a bad value."""
    shapes = expected_shapes(cfg)
    missing = [k for k in shapes if k not in weights]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise WeightsError(f"{source}: missing tensor(s) {', '.join(missing[:5])}{more} "
                           f"for config {cfg.name}; is this a checkpoint of that model?")
    unexpected = [k for k in weights if k not in shapes]
    if unexpected:
        more = f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
        raise WeightsError(f"{source}: unexpected tensor(s) {', '.join(unexpected[:5])}{more} "
                           f"for config {cfg.name}; the checkpoint has parts this model lacks")
    for key, shape in shapes.items():
        array = weights[key]
        if tuple(array.shape) != shape:
            raise WeightsError(f"{source}: tensor {key} has shape {tuple(array.shape)}, "
                               f"config {cfg.name} expects {shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsError(f"{source}: tensor {key} has dtype {array.dtype}, "
                               "expected a floating-point type")
        if not np.isfinite(array).all():
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise WeightsError(f"{source}: tensor {key} has {bad} non-finite value(s) (NaN/inf); "
                               "the checkpoint is corrupt")


def as_float32(weights: Mapping[str, np.ndarray]) -> Weights:
    """C-contiguous float32 copies (no copy where the array already is one)."""
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


# ---- reading and writing ---------------------------------------------------------------------

def save(path: str | os.PathLike, cfg: ViTConfig, weights: Mapping[str, np.ndarray],
         dtype: str = "fp32", source: str | None = None, labels: list[str] | None = None,
         extra: Mapping[str, str] | None = None) -> Path:
    """Write weights in the shared format, atomically (a temp file renamed into place).

    labels: the class names of the head, in index order (vit-run prints them; a model trained
    by vit-train records its dataset's classes). extra: more metadata strings (vit-train stores
    its recipe as "train_config")."""
    from safetensors.numpy import save_file

    if dtype not in STORAGE_DTYPES:
        raise WeightsError(f"unknown storage dtype {dtype!r}; choose one of {list(STORAGE_DTYPES)}")
    validate(cfg, weights)
    shapes = expected_shapes(cfg)
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": cfg.to_json()}
    if source:
        metadata["source"] = source
    if labels is not None:
        if len(labels) != cfg.num_classes:
            raise WeightsError(f"{len(labels)} labels for a head of {cfg.num_classes} classes")
        metadata["labels"] = json.dumps(list(map(str, labels)))
    reserved = set(metadata) & set(extra or {})
    if reserved:
        raise WeightsError(f"metadata keys {sorted(reserved)} are the format's own")
    metadata.update(extra or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if dtype == "bf16":
            _save_bf16(str(tmp), {k: weights[k] for k in shapes}, metadata)
        else:
            tensors = {k: np.ascontiguousarray(weights[k], dtype=STORAGE_DTYPES[dtype])
                       for k in shapes}
            save_file(tensors, str(tmp), metadata=metadata)
    return path


def _save_bf16(path: str, weights: Mapping[str, np.ndarray], metadata: dict[str, str]) -> None:
    torch = _torch_for("writing bf16 files")
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(np.asarray(v, np.float32)).to(torch.bfloat16)
               for k, v in weights.items()}, path, metadata=metadata)


def _torch_for(purpose: str):
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{purpose} needs torch (pip install torch); "
                           "or convert the checkpoint to fp32 where torch is installed") from None
    return torch


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], Weights]:
    """(metadata, tensors) of any .safetensors file; bf16 is widened to float32 through torch
    (numpy has no bfloat16), other dtypes are returned as stored."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            has_bf16 = any(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())
            tensors: Weights = {} if has_bf16 else {k: f.get_tensor(k) for k in f.keys()}
        if has_bf16:  # numpy has no bfloat16: widen through torch
            torch = _torch_for("reading bf16 tensors")
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k).to(torch.float32).numpy() for k in f.keys()}
    except SafetensorError as exc:
        raise WeightsError(f"{path}: not a readable .safetensors file, truncated or corrupt "
                           f"({exc}); download or convert it again") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc}); the file may be corrupt") from None
    return metadata, tensors


def stored_labels(metadata: Mapping[str, str]) -> list[str] | None:
    """The class names a polyvit file records for its head, or None when it records none."""
    text = metadata.get("labels")
    if text is None:
        return None
    try:
        labels = json.loads(text)
    except json.JSONDecodeError:
        labels = None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise WeightsError("the file's 'labels' metadata is not a JSON list of class names")
    return labels


def labels_of(path: str | os.PathLike) -> list[str] | None:
    """The class names recorded in a polyvit .safetensors file (None for any other checkpoint)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError):
        return None
    return stored_labels(metadata) if is_polyvit_file(metadata) else None


def is_polyvit_file(metadata: Mapping[str, str]) -> bool:
    return metadata.get("format") == FORMAT_NAME


def load(path: str | os.PathLike) -> tuple[ViTConfig, Weights]:
    """Read a file in the shared format, validated, as float32 arrays."""
    metadata, tensors = read_safetensors(path)
    if not is_polyvit_file(metadata):
        raise WeightsError(f"{path}: not a polyvit weights file (no 'format: polyvit' metadata); "
                           "convert it with vit-convert or polyvit.convert")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{path}: format_version {version!r} is not supported "
                           f"(this polyvit reads version {FORMAT_VERSION}); upgrade polyvit")
    if "config" not in metadata:
        raise WeightsError(f"{path}: metadata has no 'config'; the file is incomplete")
    try:
        cfg = ViTConfig.from_json(metadata["config"])
    except (ConfigError, TypeError) as exc:
        raise WeightsError(f"{path}: the config in its metadata is invalid: {exc}") from None
    weights = as_float32(tensors)
    # The importers' check first: a config that disagrees with the tensors is named field by
    # field, where validate() could only list the tensors that then look missing or misshapen.
    # (convert/ imports this module, so it is imported here, when a file is read.)
    from .convert.common import SHARED_KEYS, Claim, check_recorded, measure

    facts = measure(weights, SHARED_KEYS, str(path))
    check_recorded(f"the config in {path}'s metadata",
                   [Claim(f, getattr(cfg, f), f"{f} {getattr(cfg, f)!r}")
                    for f in (*facts, "num_heads")], facts)
    validate(cfg, weights, source=str(path))
    return cfg, weights


# ---- seeded weights ----------------------------------------------------------------------------

def random_weights(cfg: ViTConfig, seed: int = 0) -> Weights:
    """Deterministic untrained weights with the dynamic range of a trained ViT.

    Every tensor is non-trivial (biases and LayerNorm affine included), so a backend that drops
    or misplaces any of them is caught by the parity tests. Linear weights are N(0, 1/fan_in):
    activations stay O(1) through the blocks and attention scores are peaked, as in real models.
    """
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for key, shape in expected_shapes(cfg).items():
        if key.endswith(".weight") and len(shape) == 1:  # LayerNorm scale
            array = 1.0 + 0.1 * rng.standard_normal(shape)
        elif key.endswith(".bias"):
            array = 0.1 * rng.standard_normal(shape)
        elif key in ("cls_token", "pos_embed"):
            array = 0.2 * rng.standard_normal(shape)
        else:  # linear or conv weight: fan_in is the product of all but the first dimension
            fan_in = int(np.prod(shape[1:]))
            array = rng.standard_normal(shape) / np.sqrt(fan_in)
        weights[key] = array.astype(np.float32)
    return weights
