"""MNIST and Fashion-MNIST in their original idx files, plain or gzipped.

A folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
t10k-labels-idx1-ubyte, each optionally .gz, directly or under raw/ (torchvision's download
layout); the "train-images.idx3-ubyte" spelling of some mirrors is read too. Fashion-MNIST uses
the same file names, so only a forced `fashion-mnist:PATH` gives its class names.

The idx format: a 4-byte big-endian magic (two zero bytes, type 0x08 = uint8, the number of
dimensions), one big-endian uint32 per dimension, then the bytes, row-major.

Splits: test = the t10k files; val = the train samples with index i % 10 == 0; train = the rest.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from . import LabelledImages, check_not_empty, train_val_rows

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (count)

# file stems of each stored set: (images, labels)
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file of one idx stem in folder: plain before .gz (no need to decompress when both
    are there, as in torchvision's raw/), the dashed name before the dotted one."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_idx_folder(root: Path) -> Path | None:
    """root or root/raw, whichever holds MNIST-style image files; None if neither does."""
    for folder in (root, root / "raw"):
        if any(find_idx_file(folder, files[0]) for files in (TRAIN_FILES, TEST_FILES)):
            return folder
    return None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array stored in one idx file, checked against its header."""
    what = "images" if magic == IMAGES_MAGIC else "labels"
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                data = stream.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # a truncated .gz ends with EOFError; a damaged one with BadGzipFile (an OSError)
        raise DatasetError(f"{path}: cannot be read ({exc}); download it again") from None
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated ({len(data)} bytes, not even an idx header); "
                           f"download it again")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetError(f"{path}: not an idx {what} file (magic 0x{found:08x}, expected "
                           f"0x{magic:08x}); check the file is the MNIST {what} file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated inside its header; download it again")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", ndim, 4))
    size = int(np.prod(shape, dtype=np.int64))
    body = len(data) - header
    if body < size:
        raise DatasetError(f"{path}: truncated: its header says {shape} ({size:,} bytes) but "
                           f"{body:,} bytes follow; download it again")
    if body > size:
        raise DatasetError(f"{path}: {body - size:,} bytes more than its header {shape} says; "
                           f"not a well-formed idx {what} file")
    # a read-only view of the file's bytes: no copy
    return np.frombuffer(data, np.uint8, size, header).reshape(shape)


def read_images_and_labels(folder: Path, stems: tuple[str, str], num_classes: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    paths = []
    for stem in stems:
        path = find_idx_file(folder, stem)
        if path is None:
            raise DatasetError(f"{folder}: {stem}[.gz] is missing; it pairs with "
                               f"{paths[0].name if paths else stems[1]}: download it again")
        paths.append(path)
    images = read_idx(paths[0], IMAGES_MAGIC)
    labels = read_idx(paths[1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{paths[0]} holds {len(images):,} images but {paths[1]} "
                           f"{len(labels):,} labels; the two files are not a pair")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DatasetError(f"{paths[1]}: label {int(labels.max())} is out of range for "
                           f"{num_classes} classes")
    return images, labels.astype(np.int64)


def read_mnist(root: Path, split: str, source: str, fashion: bool = False) -> LabelledImages:
    kind = "fashion-mnist" if fashion else "mnist"
    check_not_empty(root)
    folder = find_idx_folder(root)
    if folder is None:
        raise DatasetError(f"{root}: no MNIST idx files (train-images-idx3-ubyte[.gz] or "
                           f"t10k-images-idx3-ubyte[.gz], here or under raw/)")
    classes = FASHION_MNIST_CLASSES if fashion else MNIST_CLASSES
    stems = TEST_FILES if split == "test" else TRAIN_FILES
    if find_idx_file(folder, stems[0]) is None:
        present = ["train", "val"] if split == "test" else ["test"]
        raise DatasetError(f"{folder}: no {split} split ({stems[0]}[.gz] is missing); "
                           f"splits here: {', '.join(present)}")
    images, labels = read_images_and_labels(folder, stems, len(classes))
    if split != "test":
        images, labels = train_val_rows(images, split), train_val_rows(labels, split)
    if len(images) == 0:
        raise DatasetError(f"{folder}: the {split} split holds no images")
    return LabelledImages(source=source, kind=kind, split=split, classes=list(classes),
                          items=images, labels=labels)
