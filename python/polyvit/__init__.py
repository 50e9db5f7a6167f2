"""polyvit: one Vision Transformer forward pass on several hand-written backends.

    import polyvit
    model = polyvit.load("vit_small_patch32_224.safetensors", backend="torch")
    logits = model(polyvit.preprocess("photo.jpg", model.config)[None])

Every backend is held to one reference (polyvit.reference) by the parity rule (polyvit.parity).
"""

from .backends import available_backends
from .config import PRESETS, Preprocessing, ViTConfig, get_config
from .convert import convert, import_checkpoint
from .errors import (BackendError, ConfigError, ImageError, PolyvitError, WeightsError,
                     WeightsNotFoundError)
from .labels import imagenet_classes
from .model import Model, load
from .preprocessing import load_image, preprocess

__version__ = "0.1.0"


def __getattr__(name: str):
    """predict and predict_table, imported on first use (the pipeline is not start-up work)."""
    if name in ("predict", "predict_table"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'polyvit' has no attribute {name!r}")


__all__ = [
    "BackendError", "ConfigError", "ImageError", "Model", "PRESETS", "PolyvitError",
    "Preprocessing", "ViTConfig", "WeightsError", "WeightsNotFoundError", "available_backends",
    "convert", "get_config", "imagenet_classes", "import_checkpoint", "load", "load_image",
    "predict", "predict_table", "preprocess",
]
