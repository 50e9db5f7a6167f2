"""HF transformers ViTForImageClassification: a folder with config.json and model.safetensors
(or pytorch_model.bin), keys like vit.encoder.layer.N.attention.attention.query.weight.

q, k and v are separate Linear layers in HF; they are stacked into timm's fused qkv here.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import SQUASH_BILINEAR, Preprocessing, ViTConfig
from ..errors import WeightsError
from .common import (Claim, ShapeKeys, check_recorded, claims, infer_heads, measure, named,
                     require)

TANH_ACTS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh")
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
HF_DEFAULT_EPS = 1e-12  # transformers' ViTConfig default
KEYS = ShapeKeys(
    proj="embeddings.patch_embeddings.projection.weight", pos="embeddings.position_embeddings",
    block="encoder.layer.{}.layernorm_before.weight",
    fc1="encoder.layer.0.intermediate.dense.weight", head="classifier.weight",
    qkv_bias="encoder.layer.0.attention.attention.query.bias")
# config.json's keys that the tensors can contradict, and the ViTConfig field each one sets
CHECKED = {"hidden_size": "embed_dim", "num_hidden_layers": "depth",
           "intermediate_size": "mlp_dim", "num_attention_heads": "num_heads",
           "image_size": "image_size", "patch_size": "patch_size", "num_channels": "in_chans",
           "num_labels": "num_classes", "qkv_bias": "qkv_bias"}


def looks_like(state: Mapping[str, Any]) -> bool:
    return any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state)


def convert(state: Mapping[str, np.ndarray], source: str, hf_config: Mapping[str, Any] | None,
            preprocessor: Mapping[str, Any] | None = None, num_heads: int | None = None,
            config_source: str = "config.json") -> tuple[ViTConfig, dict[str, np.ndarray]]:
    hf_config = hf_config or {}
    # ViTForImageClassification nests the encoder under "vit." but not the classifier
    s = {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith("vit.pooler.")}
    if "classifier.weight" not in s:
        raise WeightsError(f"{source}: no classifier.weight: a ViTModel without a classification "
                           "head; use a ViTForImageClassification checkpoint")
    facts = measure(s, KEYS, source)
    recorded = claims(hf_config, CHECKED)
    labels = hf_config.get("id2label")
    if isinstance(labels, Mapping):  # transformers takes num_labels from its length
        recorded.append(Claim("num_classes", len(labels), f"id2label with {len(labels)} labels"))
    check_recorded(config_source, recorded, facts)
    act = hf_config.get("hidden_act", "gelu")
    if act != "gelu" and act not in TANH_ACTS:
        raise WeightsError(f"{source}: hidden_act {act!r} is not a GELU this project implements")
    heads = hf_config.get("num_attention_heads", num_heads)
    if num_heads is not None and heads != num_heads:
        raise WeightsError(f"{source}: config.json says {heads} heads; num_heads={num_heads} "
                           "contradicts it")
    cfg = named(ViTConfig(
        **{field: fact.value for field, fact in facts.items()},
        num_heads=infer_heads(facts["embed_dim"].value, heads, source),
        ln_eps=float(hf_config.get("layer_norm_eps", HF_DEFAULT_EPS)),
        gelu="tanh" if act in TANH_ACTS else "erf",
        preprocessing=_preprocessing(preprocessor)))

    w = {
        "patch_embed.proj.weight": s[KEYS.proj],
        "patch_embed.proj.bias": require(s, "embeddings.patch_embeddings.projection.bias", source),
        "cls_token": require(s, "embeddings.cls_token", source),
        "pos_embed": s[KEYS.pos],
        "norm.weight": require(s, "layernorm.weight", source),
        "norm.bias": require(s, "layernorm.bias", source),
        "head.weight": s["classifier.weight"],
        "head.bias": require(s, "classifier.bias", source),
    }
    for i in range(cfg.depth):
        h, b = f"encoder.layer.{i}.", f"blocks.{i}."

        def get(name: str) -> np.ndarray:
            return require(s, h + name, source)
        att = "attention.attention."
        w[b + "norm1.weight"] = get("layernorm_before.weight")
        w[b + "norm1.bias"] = get("layernorm_before.bias")
        w[b + "attn.qkv.weight"] = np.concatenate(
            [get(f"{att}{n}.weight") for n in ("query", "key", "value")])
        if cfg.qkv_bias:
            w[b + "attn.qkv.bias"] = np.concatenate(
                [get(f"{att}{n}.bias") for n in ("query", "key", "value")])
        w[b + "attn.proj.weight"] = get("attention.output.dense.weight")
        w[b + "attn.proj.bias"] = get("attention.output.dense.bias")
        w[b + "norm2.weight"] = get("layernorm_after.weight")
        w[b + "norm2.bias"] = get("layernorm_after.bias")
        w[b + "mlp.fc1.weight"] = get("intermediate.dense.weight")
        w[b + "mlp.fc1.bias"] = get("intermediate.dense.bias")
        w[b + "mlp.fc2.weight"] = get("output.dense.weight")
        w[b + "mlp.fc2.bias"] = get("output.dense.bias")
    return cfg, w


def _preprocessing(pre: Mapping[str, Any] | None) -> Preprocessing:
    """ViTImageProcessor resizes straight to size x size (no crop), then normalises."""
    if not pre:
        return SQUASH_BILINEAR
    resample = PIL_RESAMPLE.get(pre.get("resample", 2), "bilinear")
    mean = pre.get("image_mean", SQUASH_BILINEAR.mean)
    std = pre.get("image_std", SQUASH_BILINEAR.std)
    if pre.get("do_center_crop"):  # some processors resize the shorter side, then crop
        size = pre.get("size", {})
        crop = pre.get("crop_size", {})
        short = size.get("shortest_edge") if isinstance(size, dict) else None
        side = crop.get("height") if isinstance(crop, dict) else crop
        if short and side:
            return Preprocessing(mean=tuple(mean), std=tuple(std), resize="shorter",
                                 crop_pct=min(1.0, float(side) / float(short)),
                                 interpolation=resample)
    return Preprocessing(mean=tuple(mean), std=tuple(std), resize="squash", crop_pct=1.0,
                         interpolation=resample)
