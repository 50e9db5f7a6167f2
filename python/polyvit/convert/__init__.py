"""Importers: every released ViT checkpoint layout into the shared weight format.

import_checkpoint(path) detects the layout from the file's bytes and keys (never its name):
  polyvit     .safetensors written by polyvit (format metadata)
  timm        timm state dicts (.pth, .bin, .safetensors) or a timm hub folder
  jax         google-research/vision_transformer AugReg .npz, with or without opt/target/
  big_vision  big_vision .npz (params/..., stacked encoderblock)
  hf          transformers ViTForImageClassification folder, or its bare weights file
  seed        github.com/miguelmartin75/vit checkpoints (model_state_dict)
Pickled files are read with torch.load(weights_only=True) only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import weights as wfmt
from ..config import ViTConfig
from ..errors import WeightsError
from . import hf, jax, seed, timm
from .common import check_file, load_npz, load_pickle, sniff, tensors_to_numpy

LAYOUTS = ("polyvit", "timm", "jax", "big_vision", "hf", "seed")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def import_checkpoint(path: str | os.PathLike, num_heads: int | None = None
                      ) -> tuple[ViTConfig, dict[str, np.ndarray], str]:
    """(config, validated float32 tensors in the shared format, layout name) of any checkpoint."""
    path = check_file(path)
    source = str(path)
    if path.is_dir():
        cfg, tensors, layout = _import_folder(path, num_heads)
    else:
        kind = sniff(path)
        if kind == "safetensors":
            metadata, raw = wfmt.read_safetensors(path)
            if wfmt.is_polyvit_file(metadata):
                cfg, tensors = wfmt.load(path)
                if num_heads is not None and num_heads != cfg.num_heads:
                    raise WeightsError(f"{source}: the file records {cfg.num_heads} heads; "
                                       f"num_heads={num_heads} contradicts it")
                return cfg, tensors, "polyvit"
            cfg, tensors, layout = _import_state(raw, source, num_heads)
        elif kind == "npz":
            arrays = load_npz(path)
            layout = jax.layout(arrays)
            if layout is None:
                raise WeightsError(f"{source}: an .npz archive without ViT keys "
                                   "(embedding/kernel); not a JAX ViT checkpoint")
            cfg, tensors = jax.convert(arrays, source, num_heads)
            layout = "jax" if layout == "augreg" else layout
        elif kind == "torch":
            obj = load_pickle(path)
            if not isinstance(obj, Mapping):
                raise WeightsError(f"{source}: the pickle holds a {type(obj).__name__}, not a "
                                   "dict of tensors; it is not a checkpoint")
            cfg, tensors, layout = _import_state(obj, source, num_heads)
        else:
            raise WeightsError(f"{source}: not a checkpoint polyvit can read; expected a "
                               ".safetensors, .npz, .pth/.bin/.pt file or an HF/timm folder")
    tensors = wfmt.as_float32(tensors)
    wfmt.validate(cfg, tensors, source=source)
    return cfg, tensors, layout


def _import_state(state: Mapping[str, Any], source: str, num_heads: int | None,
                  hf_config: Mapping[str, Any] | None = None,
                  preprocessor: Mapping[str, Any] | None = None,
                  hub_config: Mapping[str, Any] | None = None, config_source: str = "config.json"):
    """Dispatch a loaded state dict (tensors or arrays) on its keys; a folder's config.json
    (config_source) comes as hf_config or hub_config."""
    if seed.looks_like(state):
        cfg, w = seed.convert(tensors_to_numpy(seed.unwrap(state), source), source, num_heads)
        return cfg, w, "seed"
    if timm.looks_like(state):
        w = tensors_to_numpy(timm.unwrap(state), source)
        cfg, w = timm.convert(w, source, num_heads, hub_config, config_source)
        return cfg, w, "timm"
    if hf.looks_like(state):
        w = tensors_to_numpy(state, source)
        cfg, w = hf.convert(w, source, hf_config, preprocessor, num_heads, config_source)
        return cfg, w, "hf"
    tensors = [k for k, v in state.items() if hasattr(v, "shape")]
    example = ", ".join(sorted(map(str, tensors))[:3]) or "no tensors"
    raise WeightsError(f"{source}: unrecognised checkpoint layout (keys like {example}); "
                       f"supported layouts: {', '.join(LAYOUTS)}")


def _import_folder(folder: Path, num_heads: int | None):
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise WeightsError(f"{folder}: a folder without config.json; pass the weights file "
                           "itself or an HF/timm model folder")
    config = _read_json(config_file)
    weights_file = next((folder / n for n in HF_WEIGHT_FILES if (folder / n).is_file()), None)
    if weights_file is None:
        raise WeightsError(f"{folder}: has config.json but none of {', '.join(HF_WEIGHT_FILES)}")
    source = str(weights_file)
    if weights_file.suffix == ".safetensors":
        _, state = wfmt.read_safetensors(weights_file)
    else:
        state = load_pickle(weights_file)
        if not isinstance(state, Mapping):
            raise WeightsError(f"{source}: holds a {type(state).__name__}, not a state dict")
    if "architecture" in config:  # timm hub folder
        return _import_state(state, source, num_heads, hub_config=config,
                             config_source=str(config_file))
    preprocessor_file = folder / "preprocessor_config.json"
    preprocessor = _read_json(preprocessor_file) if preprocessor_file.is_file() else None
    return _import_state(state, source, num_heads, hf_config=config, preprocessor=preprocessor,
                         config_source=str(config_file))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def convert(src: str | os.PathLike, dst: str | os.PathLike, num_heads: int | None = None,
            dtype: str = "fp32") -> ViTConfig:
    """Import any supported checkpoint and write it in the shared format; returns its config."""
    cfg, tensors, layout = import_checkpoint(src, num_heads=num_heads)
    wfmt.save(dst, cfg, tensors, dtype=dtype, source=f"{layout}:{Path(src).name}")
    return cfg
