"""Labelled image datasets for vit-train and vit-eval: one reader per on-disk layout.

    from polyvit.datasets import open_dataset
    data = open_dataset("digits", "test")                       # scikit-learn's bundled digits
    data = open_dataset("~/data/tiny-imagenet-200", "val")      # layout detected from the files
    data = open_dataset("fashion-mnist:~/data/fashion", "train")  # layout forced (KIND:PATH)
    for item, label in zip(data.items, data.labels):
        image = polyvit.load_image(item)                         # a path or a uint8 array

Every reader returns a LabelledImages. Splits are fixed and reproducible, with no random seed
(docs/datasets.md gives each layout's rule). Nothing is decoded here: an image folder's items are
paths, and a corrupt file is found (and skipped) by the caller when it decodes it.

The readers are imported on first use, so `import polyvit.datasets` costs numpy only (no torch,
no scikit-learn).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

SPLITS = ("train", "val", "test")
KINDS = ("digits", "imagefolder", "mnist", "fashion-mnist", "cifar10")
# the kinds a KIND:PATH spec may force; digits has no path
PATH_KINDS = KINDS[1:]

# What a folder must look like, for the message when it looks like none of them.
LAYOUTS = ("an image folder (train/, val/ or test/ holding one folder per class), "
           "MNIST idx files (train-images-idx3-ubyte[.gz]), or CIFAR-10 python batches "
           "(data_batch_1 ... and batches.meta, or their cifar-10-batches-py/ folder)")

# "KIND:" at the start of a spec. Two characters at least, so a Windows drive ("C:\data") is a
# path, not a kind.
_KIND_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_-]+):(.*)$", re.DOTALL)


@dataclass
class LabelledImages:
    """One split of a dataset: items[k] is an image (anything polyvit.load_image accepts: a file
    path, or a uint8 HxW / HxWx3 array) and labels[k] its class, an index into classes."""

    source: str         # "digits", or the dataset folder as given, for messages and metadata
    kind: str           # one of KINDS
    split: str          # one of SPLITS
    classes: list[str]  # class names; label k is classes[k]
    items: Sequence     # a list of paths, or one uint8 array (N, H, W[, 3]) whose rows are images
    labels: np.ndarray  # int64, shape (N,), values in [0, len(classes))

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.items),):
            raise DatasetError(f"{self.source} {self.split}: {len(self.items)} images but "
                               f"labels of shape {self.labels.shape}; the reader is inconsistent")

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        """One line for logs, e.g. "digits test: 360 images, 10 classes"."""
        where = "" if self.source == self.kind else f" ({self.source})"
        return (f"{self.kind} {self.split}{where}: {len(self):,} images, "
                f"{len(self.classes):,} classes")

    def class_counts(self) -> np.ndarray:
        """Images per class, shape (len(classes),), int64."""
        return np.bincount(self.labels, minlength=len(self.classes)).astype(np.int64)


def open_dataset(spec: str | os.PathLike, split: str) -> LabelledImages:
    """Read one split of a dataset.

    spec: "digits"; a folder whose layout is detected from its contents; or "KIND:PATH" with KIND
    one of imagefolder, mnist, fashion-mnist, cifar10 to force the layout (fashion-mnist must be
    forced: its files are named as MNIST's). split: "train", "val" or "test"."""
    check_split(split)
    if isinstance(spec, str) and spec == "digits":
        from .digits import read_digits

        return read_digits(split)
    kind, path = parse_spec(spec)
    root = _existing_folder(path)
    if kind is None:
        kind = detect_kind(root)
    source = os.fspath(path)
    if kind == "imagefolder":
        from .image_folder import read_image_folder

        return read_image_folder(root, split, source)
    if kind in ("mnist", "fashion-mnist"):
        from .idx import read_mnist

        return read_mnist(root, split, source, fashion=(kind == "fashion-mnist"))
    from .cifar import read_cifar10

    return read_cifar10(root, split, source)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")


def parse_spec(spec: str | os.PathLike) -> tuple[str | None, Path]:
    """(forced kind or None, path) of a dataset spec; "~" is expanded."""
    if not isinstance(spec, (str, os.PathLike)):
        raise DatasetError(f"a dataset is named by a string or a path, not a "
                           f"{type(spec).__name__}: pass 'digits', a folder, or KIND:PATH")
    kind = None
    text = os.fspath(spec)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    match = _KIND_PREFIX.match(text) if isinstance(spec, str) else None
    # A folder literally named "mnist:old" is a path: the prefix is only read off a spec that
    # does not exist as written.
    if match and not Path(text).expanduser().exists():
        kind, text = match.group(1).lower(), match.group(2)
        if kind == "digits":
            raise DatasetError(f"{spec!r}: the digits dataset is bundled and takes no path; "
                               f"pass just 'digits'")
        if kind not in PATH_KINDS:
            raise DatasetError(f"unknown dataset kind {match.group(1)!r} in {spec!r}: "
                               f"KIND is one of {', '.join(PATH_KINDS)}")
        if not text:
            raise DatasetError(f"{spec!r} names no folder: write {kind}:PATH")
    return kind, Path(text).expanduser()


def detect_kind(root: Path) -> str:
    """The layout of an existing dataset folder: "mnist", "cifar10" or "imagefolder".

    MNIST and Fashion-MNIST share file names, so a detected idx folder is "mnist"."""
    from .cifar import find_batches_folder
    from .idx import find_idx_folder
    from .image_folder import split_folders

    if find_idx_folder(root) is not None:
        return "mnist"
    if find_batches_folder(root) is not None:
        return "cifar10"
    if split_folders(root):
        return "imagefolder"
    check_not_empty(root)
    raise DatasetError(f"{root}: not a dataset layout polyvit reads; expected {LAYOUTS} "
                       f"(or force one with KIND:PATH)")


def _existing_folder(path: Path) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory; pass 'digits', a dataset "
                           f"folder, or KIND:PATH")
    if not path.is_dir():
        raise DatasetError(f"{path}: a file, not a dataset folder; pass the folder that holds "
                           f"the dataset")
    return path


def check_not_empty(root: Path) -> None:
    """A dataset folder with nothing in it (an unfinished download or extraction) is an error."""
    if not any(root.iterdir()):
        raise DatasetError(f"{root}: the dataset folder is empty; expected {LAYOUTS}")


def train_val_rows(rows: np.ndarray, split: str) -> np.ndarray:
    """The train or val part of a training set whose val split is every 10th sample (index
    i % 10 == 0). val is a view (a strided slice); train is one copy, made once."""
    if split == "val":
        return rows[::10]
    keep = np.arange(len(rows)) % 10 != 0
    return rows[keep]


__all__ = ["DatasetError", "KINDS", "LabelledImages", "SPLITS", "detect_kind", "open_dataset"]
