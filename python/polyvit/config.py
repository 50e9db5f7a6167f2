"""ViTConfig: the only source of shapes for every backend.

A config describes one member of the ViT family (patch size, width, depth, heads ...) plus the
flags that released checkpoints disagree on (LayerNorm eps, qkv bias, patch norms, GELU form) and
the preprocessing the checkpoint was trained with.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

GELU_FORMS = ("erf", "tanh")
RESIZE_RULES = ("shorter", "squash")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How a checkpoint expects its images: resize rule, interpolation, normalisation.

    resize="shorter": scale the shorter side to image_size / crop_pct, then center-crop
    image_size (timm's eval transform). resize="squash": scale straight to image_size x
    image_size, ignoring aspect (HF ViTImageProcessor, the seed checkpoint's eval).
    """

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "shorter"
    crop_pct: float = 0.9
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("preprocessing mean and std need 3 values (one per RGB channel)")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing std must be positive, got {self.std}")
        if self.resize not in RESIZE_RULES:
            raise ConfigError(f"resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")


TIMM_AUGREG = Preprocessing()
SQUASH_BILINEAR = Preprocessing(resize="squash", crop_pct=1.0, interpolation="bilinear")


@dataclass(frozen=True)
class ViTConfig:
    name: str = "vit_small_patch32_224"
    image_size: int = 224
    patch_size: int = 32
    in_chans: int = 3
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    num_classes: int = 1000
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    patch_norm_pre: bool = False   # LayerNorm over each flattened patch before the projection
    patch_norm_post: bool = False  # LayerNorm over each patch embedding after the projection
    gelu: str = "erf"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads",
                     "mlp_dim", "num_classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.gelu not in GELU_FORMS:
            raise ConfigError(f"gelu must be one of {GELU_FORMS}, got {self.gelu!r}")
        if not self.ln_eps > 0:
            raise ConfigError(f"ln_eps must be positive, got {self.ln_eps}")
        if isinstance(self.preprocessing, dict):
            object.__setattr__(self, "preprocessing", Preprocessing(**self.preprocessing))

    # Derived shapes: computed, never stored, so they cannot disagree with the fields.
    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1  # + class token

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_chans * self.patch_size ** 2

    def replace(self, **changes: Any) -> "ViTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        data = dict(data)
        if "preprocessing" in data and isinstance(data["preprocessing"], dict):
            data["preprocessing"] = Preprocessing(**data["preprocessing"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ViTConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object")
        return cls.from_dict(data)

    def flops_per_image(self) -> int:
        """Multiply-adds x 2 of one forward pass (matmuls only)."""
        t, d, m = self.num_tokens, self.embed_dim, self.mlp_dim
        per_block = 2 * t * d * (3 * d + d + 2 * m) + 2 * 2 * t * t * d
        return self.depth * per_block + 2 * self.num_patches * self.patch_dim * d \
            + 2 * d * self.num_classes


def _vit(name: str, patch: int, dim: int, depth: int, heads: int, **kw: Any) -> ViTConfig:
    return ViTConfig(name=name, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                     mlp_dim=4 * dim, **kw)


PRESETS: dict[str, ViTConfig] = {c.name: c for c in (
    _vit("vit_small_patch32_224", 32, 384, 12, 6),
    _vit("vit_tiny_patch16_224", 16, 192, 12, 3),
    _vit("vit_small_patch16_224", 16, 384, 12, 6),
    _vit("vit_base_patch32_224", 32, 768, 12, 12),
    _vit("vit_base_patch16_224", 16, 768, 12, 12),
    # The ViT-S/32 ImageNet-1k checkpoint of github.com/miguelmartin75/vit (vit/pt.py, class ViT).
    _vit("vit_small_patch32_224_seed", 32, 384, 12, 6, ln_eps=1e-5, qkv_bias=False,
         patch_norm_pre=True, patch_norm_post=True, preprocessing=SQUASH_BILINEAR),
    # The model vit-train trains on scikit-learn's digits by default (weights/vit_digits.safetensors):
    # the 8x8 digits scaled to 16x16, 16 patches of 4x4, 10 classes.
    ViTConfig(name="vit_digits", image_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=4,
              mlp_dim=256, num_classes=10, preprocessing=SQUASH_BILINEAR),
    # A very small member for fast tests: 17 tokens, head dim 16, 10 classes.
    ViTConfig(name="vit_test", image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
              mlp_dim=192, num_classes=10),
)}

DEFAULT_CONFIG = "vit_small_patch32_224"


def get_config(name: str = DEFAULT_CONFIG) -> ViTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; presets: {', '.join(PRESETS)}") from None
