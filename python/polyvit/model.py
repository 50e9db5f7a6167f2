"""polyvit.load and the Model it returns."""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from . import backends
from .backends.base import Backend, check_images
from .config import DEFAULT_CONFIG, ViTConfig, get_config
from .errors import ConfigError, WeightsError
from .weights import as_float32, random_weights, validate

DEFAULT_SEED = 0


class Model:
    """A ViT on one backend: model(images) -> logits.

    images: float32 (B, C, H, W), already preprocessed (polyvit.preprocess).
    Returns float32 (B, num_classes) logits. Safe to call from several threads.

    A model loaded with features=True also gives the pre-logits embedding (the class token
    after the final norm) through logits_and_features(): its backend runs a head widened by an
    identity block (with_feature_head), so one forward pass yields both, exactly in fp32.
    """

    def __init__(self, impl: Backend, weights_source: str, config: ViTConfig | None = None,
                 weights: Mapping[str, np.ndarray] | None = None,
                 labels: list[str] | None = None) -> None:
        self.impl = impl
        self.weights_source = weights_source
        self.labels = labels  # class names the checkpoint records (polyvit files), else None
        self._config = config or impl.config
        self.feature_dim = impl.config.num_classes - self._config.num_classes
        self._weights = weights  # kept by features=True, for the op-by-op token path
        self._ops = None

    @property
    def config(self) -> ViTConfig:
        return self._config

    def class_names(self) -> tuple[str, ...]:
        """The head's class names: recorded in the checkpoint, ImageNet-1k's, or "class N"."""
        from .labels import class_names

        return class_names(self.config.num_classes, self.labels)

    @property
    def backend(self) -> str:
        return self.impl.name

    @property
    def precision(self) -> str:
        return self.impl.precision

    def __call__(self, images: Any) -> np.ndarray:
        out = self.impl.forward(check_images(images, self.config))
        return np.ascontiguousarray(out[:, :self.config.num_classes]) if self.feature_dim else out

    def attention_maps(self, images: Any) -> list[np.ndarray]:
        """Every block's attention probabilities, (B, heads, T, T) each (token 0: the class
        token), from backends that can give them (BackendError names them otherwise)."""
        return self.impl.attention_maps(check_images(images, self.config))

    def forward_features(self, images: Any, return_tokens: bool = False,
                         pool: str = "token") -> np.ndarray:
        """The pre-logits embedding, (B, embed_dim): the class token after the final norm
        (pool="token"), or the mean of the normed patch tokens (pool="mean", for checkpoints
        trained with average pooling). return_tokens=True: every normed token, (B, T, D).

        The class token comes from the fused forward; tokens and the mean come from the same
        network run op by op on this backend's kernels (polyvit.tokens), since the fused
        forward computes the last block for the class token alone."""
        from .tokens import POOLS, forward_tokens
        from .tokens import pool as pooled

        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if not return_tokens and pool == "token":
            return self.logits_and_features(images)[1]
        if self._weights is None:
            raise ValueError("tokens and mean pooling need a model loaded with features=True "
                             "(polyvit.load(..., features=True))")
        if self._ops is None:
            self._ops = type(self.impl).ops(self.precision, **self.impl.options)
        tokens = forward_tokens(self._ops, self.config, self._weights,
                                check_images(images, self.config))
        return tokens if return_tokens else pooled(tokens, pool)

    def logits_and_features(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """(B, num_classes) logits and (B, embed_dim) features from one forward pass."""
        if not self.feature_dim:
            raise ValueError("this model gives logits only; load it with features=True "
                             "(polyvit.load(..., features=True)) to get features too")
        out = self.impl.forward(check_images(images, self.config))
        c = self.config.num_classes
        return np.ascontiguousarray(out[:, :c]), np.ascontiguousarray(out[:, c:])

    def __repr__(self) -> str:
        return (f"Model(config={self.config.name!r}, backend={self.backend!r}, "
                f"precision={self.precision!r}, weights={self.weights_source!r})")


def load(weights: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
         backend: str = "torch", precision: str = "fp32", *,
         config: str | ViTConfig | None = None, num_heads: int | None = None,
         features: bool = False, image_size: int | None = None, **options: Any) -> Model:
    """Load a ViT onto a backend.

    weights:   a checkpoint path in any supported layout (see polyvit.convert), a mapping of
               tensors in the shared format's key names (needs config=), or None for the
               built-in untrained seeded weights of `config` (default vit_small_patch32_224).
    backend:   a name from polyvit.available_backends().
    precision: one of the backend's precisions; "fp32" everywhere.
    num_heads: overrides the head count of checkpoints that do not record it.
    features:  also give the pre-logits embedding (Model.logits_and_features).
    image_size: run at this image size (a multiple of the patch size): the position embedding
               is resampled bicubically (polyvit.resize.at_image_size).
    options:   passed to the backend (e.g. threads=2).
    """
    # options first: a wrong option is the same error whether or not the backend runs here;
    # both before reading a large checkpoint
    backends.backend_class(backend).check_arguments(precision, options)
    backends.require(backend)
    cfg, tensors, source = resolve_weights(weights, config, num_heads, image_size)
    return build(backend, cfg, tensors, source, precision, features,
                 labels=recorded_labels(weights), **options)


def recorded_labels(weights: Any) -> list[str] | None:
    """The class names a polyvit weights file records, or None (other inputs record none)."""
    if not isinstance(weights, (str, os.PathLike)):
        return None
    from .weights import labels_of

    return labels_of(weights)


def build(backend: str, cfg: ViTConfig, tensors: Mapping[str, np.ndarray], source: str,
          precision: str = "fp32", features: bool = False, labels: list[str] | None = None,
          **options: Any) -> Model:
    """A Model from resolved weights (resolve_weights), with the feature head if asked."""
    cls = backends.require(backend)
    if features:
        wide_cfg, wide = with_feature_head(cfg, tensors)
        return Model(cls(wide_cfg, wide, precision, **options), source, config=cfg,
                     weights=tensors, labels=labels)
    return Model(cls(cfg, tensors, precision, **options), source, labels=labels)


def with_feature_head(cfg: ViTConfig, tensors: Mapping[str, np.ndarray]
                      ) -> tuple[ViTConfig, dict[str, np.ndarray]]:
    """The same model with embed_dim more outputs: the head's rows, then an identity block
    (bias 0) that copies the normed class token, so a backend's logits carry the features."""
    d = cfg.embed_dim
    wide = dict(tensors)
    wide["head.weight"] = np.concatenate(
        [tensors["head.weight"], np.eye(d, dtype=np.float32)]).astype(np.float32)
    wide["head.bias"] = np.concatenate(
        [tensors["head.bias"], np.zeros(d, np.float32)]).astype(np.float32)
    return cfg.replace(num_classes=cfg.num_classes + d), wide


def resolve_weights(weights: Any, config: str | ViTConfig | None = None,
                    num_heads: int | None = None, image_size: int | None = None
                    ) -> tuple[ViTConfig, dict[str, np.ndarray], str]:
    """(config, float32 tensors, description of where they came from) for load()'s arguments;
    at image_size when given (position embedding resampled)."""
    cfg, tensors, source = _resolve(weights, config, num_heads)
    if image_size is not None:
        from .resize import at_image_size

        resized = image_size != cfg.image_size
        cfg, tensors = at_image_size(cfg, tensors, image_size)
        if resized:
            source += f", position embedding resampled to {image_size} px"
    return cfg, tensors, source


def _resolve(weights: Any, config: str | ViTConfig | None,
             num_heads: int | None) -> tuple[ViTConfig, dict[str, np.ndarray], str]:
    if weights is None:
        cfg = _config(config or DEFAULT_CONFIG)
        if num_heads is not None:
            cfg = cfg.replace(num_heads=num_heads)
        return cfg, random_weights(cfg, DEFAULT_SEED), f"built-in untrained (seed {DEFAULT_SEED})"
    if isinstance(weights, Mapping):
        if config is None:
            raise ConfigError("in-memory weights need config= (a preset name or a ViTConfig)")
        cfg = _config(config)
        if num_heads is not None:
            cfg = cfg.replace(num_heads=num_heads)
        tensors = as_float32(weights)
        validate(cfg, tensors, source="weights")
        return cfg, tensors, "in-memory"
    if config is not None:
        raise ConfigError("a checkpoint carries its own config; to override the head count "
                          "of a checkpoint that does not record it, pass num_heads=")
    if not isinstance(weights, (str, os.PathLike)):
        raise WeightsError(f"weights must be a path, a mapping of arrays or None, "
                           f"got {type(weights).__name__}")
    from .convert import import_checkpoint

    cfg, tensors, layout = import_checkpoint(weights, num_heads=num_heads)
    return cfg, tensors, f"{os.fspath(weights)} ({layout})"


def _config(config: str | ViTConfig) -> ViTConfig:
    return config if isinstance(config, ViTConfig) else get_config(config)
