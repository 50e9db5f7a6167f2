"""Images to model input: decode safely, convert to RGB, resize and crop by the checkpoint's rule.

preprocess(image, config) -> (3, H, W) float32, or (5, 3, H, W) with crops="five".
"""

from __future__ import annotations

import io
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import ViTConfig
from .errors import ImageError

# Decoding an image larger than this is refused: a small file can claim billions of pixels.
# PIL's own default; PIL refuses anything over twice its limit whatever max_pixels says.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
FIVE_CROP_SCALE = 1.5  # five-crop resizes the shorter side to 1.5x the crop (224 -> 336)
RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

# PIL warns past its own limit and raises past twice that; polyvit's max_pixels decides instead
# and raises an ImageError, so PIL's warning would only repeat it. A process-wide filter, not
# warnings.catch_warnings(): that swaps global state and is unsafe in the decode threads.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module=r"PIL\.Image")


def load_image(source: Any, max_pixels: int = MAX_PIXELS,
               draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode a path, bytes, numpy HxW(xC) uint8 array or PIL image into an RGB PIL image.

    draft=(w, h): a JPEG may be decoded at 1/2, 1/4 or 1/8 scale, keeping both sides at least
    (w, h) (Pillow's draft mode: the DCT is scaled, not the pixels, so it is much faster)."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ImageError(f"an image array must be uint8 HxW or HxWxC, got {source.dtype} "
                             f"{source.shape}; float arrays are model input: call the model")
        return to_rgb(Image.fromarray(source))
    if isinstance(source, (bytes, bytearray)):
        return to_rgb(_decode(io.BytesIO(source), "<bytes>", max_pixels, draft))
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(f"cannot read an image from a {type(source).__name__}; "
                         "pass a path, bytes, a uint8 array or a PIL image")
    name = os.fspath(source)
    if not Path(name).is_file():
        raise ImageError(f"{name}: no such file")
    try:
        stream = open(name, "rb")
    except PermissionError:
        raise ImageError(f"{name}: permission denied (cannot open the file for reading)") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot open the file ({exc.strerror or exc})") from None
    with stream:
        if os.fstat(stream.fileno()).st_size == 0:
            raise ImageError(f"{name}: an empty file (0 bytes), not an image")
        return to_rgb(_decode(stream, name, max_pixels, draft))


def _decode(stream: Any, name: str, max_pixels: int,
            draft: tuple[int, int] | None = None) -> Image.Image:
    try:
        image = Image.open(stream)
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"{name}: {width}x{height} = {width * height:,} pixels, over the "
                             f"limit of {max_pixels:,}; refusing to decode a possible "
                             "decompression bomb (raise max_pixels if you trust the file)")
        if draft is not None and image.format == "JPEG":
            image.draft("RGB", draft)
        image.load()
        return ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file PIL can decode "
                         "(JPEG, PNG, WebP, BMP, TIFF, GIF ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: the image is truncated or corrupt ({exc})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: grayscale, alpha (dropped, as timm and torchvision do),
    palette, CMYK, and 16-bit or float grayscale (scaled to 8 bits, not clipped)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        a = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":  # float grayscale: taken as [0, 1] when it fits, else [0, 255]
        a = np.asarray(image, dtype=np.float64)
        scale = 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(a) * scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "P":  # via RGBA, so palette transparency is honoured like other alpha
        image = image.convert("RGBA")
    return image.convert("RGB")


def _resize_shorter(image: Image.Image, short: int, resample: Image.Resampling) -> Image.Image:
    """Scale so the shorter side is `short`, keeping aspect (torchvision Resize(int))."""
    w, h = image.size
    if w <= h:
        size = (short, max(1, int(short * h / w)))
    else:
        size = (max(1, int(short * w / h)), short)
    return image.resize(size, resample) if size != (w, h) else image


def _crop(image: Image.Image, left: int, top: int, size: int) -> Image.Image:
    return image.crop((left, top, left + size, top + size))


def _center(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    return _crop(image, int(round((w - size) / 2.0)), int(round((h - size) / 2.0)), size)


@lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: (v / 255 - mean[c]) / std[c] for every uint8 value v, computed with the
    same float32 operations as on an image, so a lookup gives the same bits."""
    v = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return np.stack([(v - m[c]) / s[c] for c in range(3)]).astype(np.float32)


def normalize(pixels: np.ndarray, config: ViTConfig) -> np.ndarray:
    """(..., H, W, 3) uint8 crops (prepare) -> (..., 3, H, W) float32, (x / 255 - mean) / std,
    by table lookup: one gather per channel, ten times faster than the arithmetic."""
    rule = config.preprocessing
    table = _normalize_table(rule.mean, rule.std)
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-1] != 3:
        raise ValueError(f"normalize takes (..., H, W, 3) uint8 pixels, got {pixels.dtype} "
                         f"{pixels.shape}")
    out = np.empty(pixels.shape[:-3] + (3,) + pixels.shape[-3:-1], np.float32)
    for c in range(3):
        np.take(table[c], pixels[..., c], out=out[..., c, :, :])
    return out


def draft_size(config: ViTConfig, crops: str = "center") -> tuple[int, int]:
    """The smallest (w, h) a JPEG may be decoded at for `config` without losing detail the
    resize keeps: every side at least the resize target (orientation-proof: both sides)."""
    size = config.image_size
    if crops == "five":
        side = int(FIVE_CROP_SCALE * size)
    elif config.preprocessing.resize == "squash":
        side = size
    else:
        side = int(size / config.preprocessing.crop_pct)
    return side, side


def preprocess(image: Any, config: ViTConfig, crops: str = "center",
               max_pixels: int = MAX_PIXELS, draft: bool = False) -> np.ndarray:
    """An image (path, bytes, uint8 array or PIL image) -> model input for `config`.

    crops="center": (3, H, W) by the checkpoint's rule (config.preprocessing).
    crops="five":   (5, 3, H, W): shorter side resized to 1.5 x H, then the four corner crops
                    and the center crop (the seed checkpoint's evaluation; average the softmax).
    draft=True:     a JPEG far larger than the model input is decoded at a reduced scale
                    (draft_size); the pixels then differ slightly from a full decode.
    """
    return normalize(prepare(image, config, crops, max_pixels, draft), config)


def prepare(image: Any, config: ViTConfig, crops: str = "center",
            max_pixels: int = MAX_PIXELS, draft: bool = False) -> np.ndarray:
    """preprocess() up to the normalisation: the resized and cropped uint8 pixels, (H, W, 3)
    or (5, H, W, 3); a quarter of the float input's bytes, for handing images between
    processes (normalize() finishes the job)."""
    if crops not in ("center", "five"):
        raise ValueError(f"crops must be 'center' or 'five', got {crops!r}")
    rule = config.preprocessing
    size = config.image_size
    rgb = load_image(image, max_pixels=max_pixels,
                     draft=draft_size(config, crops) if draft else None)
    resample = RESAMPLE[rule.interpolation]
    if crops == "five":
        big = _resize_shorter(rgb, int(FIVE_CROP_SCALE * size), resample)
        w, h = big.size
        corners = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size)]
        views = [_crop(big, x, y, size) for x, y in corners] + [_center(big, size)]
        return np.stack([np.asarray(v, dtype=np.uint8) for v in views])
    if rule.resize == "squash":
        view = rgb.resize((size, size), resample)
    else:
        view = _center(_resize_shorter(rgb, int(size / rule.crop_pct), resample), size)
    return np.asarray(view, dtype=np.uint8)
