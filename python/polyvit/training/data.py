"""A labelled dataset decoded once into memory, in the exact pixels vit-eval and vit-run see.

Every image goes through polyvit.preprocessing.prepare() with the model's rule (the center view
at the training image size), in a pool of threads (Pillow releases the GIL while it decodes), and
is kept as uint8 (N, H, W, 3): a quarter of the float bytes, normalised per batch by the same
normalize() that polyvit.preprocess uses. So the accuracy vit-train reports on val and test is
computed on the same inputs vit-eval gives a backend, bit for bit.

An image that cannot be decoded (corrupt, truncated, not an image, unreadable) is skipped and
counted: training goes on without it and the log names the first few.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..config import ViTConfig
from ..datasets import LabelledImages
from ..errors import DatasetError, ImageError
from ..preprocessing import normalize, prepare

# Decoded datasets larger than this are refused with a message rather than filling the memory.
MAX_DECODED_BYTES = 16 << 30


@dataclass
class DecodedSplit:
    name: str                         # the split: train, val or test
    pixels: np.ndarray                # uint8 (N, H, W, 3) at the model's image size
    labels: np.ndarray                # int64 (N,)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason) not decoded

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray, cfg: ViTConfig) -> tuple[np.ndarray, np.ndarray]:
        """(float32 (B, 3, H, W) model input, int64 (B,) labels) of these samples."""
        return normalize(self.pixels[indices], cfg), self.labels[indices]


def decode(data: LabelledImages, cfg: ViTConfig, workers: int = 4,
           progress: bool = False) -> DecodedSplit:
    """Decode and prepare every image of `data` for `cfg`; skip and record the unreadable ones."""
    n = len(data)
    if n == 0:
        raise DatasetError(f"{data.describe()}: no images to read")
    need = n * cfg.image_size * cfg.image_size * 3
    if need > MAX_DECODED_BYTES:
        raise DatasetError(
            f"{data.describe()} needs {need / 2**30:.1f} GiB decoded at {cfg.image_size} px, over "
            f"the {MAX_DECODED_BYTES >> 30} GiB this reader keeps in memory; train at a smaller "
            "image_size or on a subset")
    pixels = np.empty((n, cfg.image_size, cfg.image_size, 3), np.uint8)
    ok = np.zeros(n, bool)
    skipped: list[tuple[str, str]] = []

    def one(i: int) -> None:
        item = data.items[i]
        try:
            pixels[i] = prepare(item, cfg)
            ok[i] = True
        except (ImageError, OSError, ValueError) as exc:
            skipped.append((item if isinstance(item, str) else f"item {i}", str(exc)))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"decode {data.split}", unit="img", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for _ in pool.map(one, range(n)):
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    if not ok.any():
        raise DatasetError(f"{data.describe()}: none of its {n} images could be decoded "
                           f"(first: {skipped[0][0]}: {skipped[0][1]})")
    keep = np.flatnonzero(ok)
    labels = np.asarray(data.labels, np.int64)
    if len(keep) == n:
        return DecodedSplit(data.split, pixels, labels)
    skipped.sort()
    return DecodedSplit(data.split, pixels[keep], labels[keep], skipped)
