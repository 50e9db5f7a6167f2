"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 images of 0..9, nothing downloaded.

Small enough to train and evaluate a tiny ViT in seconds on a CPU, and real data (not noise), so a
run that learns nothing is a bug. The split is fixed over the images' order in
sklearn.datasets.load_digits(): index i is test when i % 5 == 0, val when i % 5 == 1, train
otherwise (360 / 360 / 1,077 images).
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from . import LabelledImages, check_split

# load_digits() pixel values are counts of set pixels in 4x4 blocks of the 32x32 original
DIGITS_MAX_VALUE = 16


def split_of_index(index: np.ndarray) -> np.ndarray:
    """The split name of each load_digits() index (the rule above), as a str array."""
    remainder = np.asarray(index) % 5
    return np.where(remainder == 0, "test", np.where(remainder == 1, "val", "train"))


def read_digits(split: str) -> LabelledImages:
    check_split(split)
    try:
        # imported here: scikit-learn is optional and slow to import
        from sklearn.datasets import load_digits
    except ImportError:
        raise DatasetError("the digits dataset needs scikit-learn "
                           "(pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.round(bunch.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)  # (1797, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    chosen = split_of_index(np.arange(len(images))) == split
    return LabelledImages(source="digits", kind="digits", split=split,
                          classes=[str(d) for d in range(10)],
                          items=images[chosen], labels=labels[chosen])
