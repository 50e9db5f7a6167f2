"""CIFAR-10, "python version" (cifar-10-python.tar.gz, extracted): pickled batches.

A folder (cifar-10-batches-py/, or the folder holding it) with data_batch_1 ... data_batch_5,
test_batch and batches.meta. Each batch is a dict with b"data", a (N, 3072) uint8 array whose
rows are three 32x32 planes (red, green, blue), and b"labels"; batches.meta has b"label_names".

Pickles can run code when loaded. The unpickler here resolves only the few numpy names a CIFAR
batch refers to, and refuses any other, so a doctored file fails with an error instead of running
its payload; docs/datasets.md still asks for files from a trusted source.

Splits: test = test_batch; val = the training images (batches 1..5 in order) with index
i % 10 == 0; train = the rest. Items are one (N, 32, 32, 3) uint8 array (HWC).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from . import LabelledImages, check_not_empty

TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SUBFOLDER = "cifar-10-batches-py"   # the folder the official archive extracts to
SIDE = 32

# What a pickled numpy array refers to (numpy 1 names "numpy.core", numpy 2 "numpy._core";
# protocol 5 rebuilds arrays with _frombuffer), and _codecs.encode, with which Python 3 writes
# bytes at protocols below 3: building arrays and byte strings, nothing else.
_ALLOWED_GLOBALS = {
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core")
      for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ForeignGlobal(pickle.UnpicklingError):
    """The pickle refers to a name outside _ALLOWED_GLOBALS."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _ForeignGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def find_batches_folder(root: Path) -> Path | None:
    """root or root/cifar-10-batches-py, whichever holds data_batch_1 and batches.meta."""
    for folder in (root, root / SUBFOLDER):
        if (folder / "data_batch_1").is_file() and (folder / META).is_file():
            return folder
    return None


def load_pickle(path: Path) -> dict:
    """One CIFAR pickle as a dict with str keys (the official files, written by Python 2, have
    byte-string keys when loaded with encoding="bytes"; ones re-saved by Python 3 have str)."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing; CIFAR-10 needs {', '.join(TRAIN_BATCHES)}, "
                           f"{TEST_BATCH} and {META}: extract cifar-10-python.tar.gz again")
    try:
        with open(path, "rb") as stream:
            content = _NumpyOnlyUnpickler(stream, encoding="bytes").load()
    except _ForeignGlobal as exc:
        raise DatasetError(f"{path}: refusing to load {exc}, which no CIFAR-10 file refers to; "
                           f"read CIFAR files only from a trusted source") from None
    except Exception as exc:  # noqa: BLE001 - unpickling a damaged file raises almost anything
        raise DatasetError(f"{path}: not a readable CIFAR-10 pickle ({exc}); "
                           f"extract cifar-10-python.tar.gz again") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: holds a {type(content).__name__}, not a CIFAR-10 dict")
    return {key.decode("latin-1") if isinstance(key, bytes) else key: value
            for key, value in content.items()}


def read_class_names(folder: Path) -> list[str]:
    meta = load_pickle(folder / META)
    names = meta.get("label_names")
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{folder / META}: no label_names list")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3072) uint8 channel-major rows, labels (N,) int64) of one batch file."""
    batch = load_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path}: no data or labels entry; not a CIFAR-10 batch")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise DatasetError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 "
                           f"(N, {3 * SIDE * SIDE})")
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data):,} images but {labels.size:,} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: a label outside 0..{num_classes - 1}")
    return data, labels


def to_hwc(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) channel-major rows -> (N, 32, 32, 3), the layout an image array has."""
    return rows.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)


def read_cifar10(root: Path, split: str, source: str) -> LabelledImages:
    check_not_empty(root)
    folder = find_batches_folder(root)
    if folder is None:
        # forced cifar10: name the first thing missing from the folder that looks most like it
        folder = root / SUBFOLDER if (root / SUBFOLDER).is_dir() else root
        missing = "data_batch_1" if not (folder / "data_batch_1").is_file() else META
        raise DatasetError(f"{folder / missing}: missing; not a CIFAR-10 python folder "
                           f"(data_batch_1..5, {TEST_BATCH}, {META})")
    classes = read_class_names(folder)
    if split == "test":
        data, labels = read_batch(folder / TEST_BATCH, len(classes))
        images = np.ascontiguousarray(to_hwc(data))
    else:
        # Keep only this split's rows of each batch, converting as we go: the whole training
        # set is never held twice.
        parts, part_labels, start = [], [], 0
        for name in TRAIN_BATCHES:
            data, batch_labels = read_batch(folder / name, len(classes))
            in_val = (start + np.arange(len(data))) % 10 == 0
            chosen = in_val if split == "val" else ~in_val
            parts.append(to_hwc(data[chosen]))
            part_labels.append(batch_labels[chosen])
            start += len(data)
        images = np.concatenate(parts)   # one contiguous (N, 32, 32, 3) array
        labels = np.concatenate(part_labels)
    if len(images) == 0:
        raise DatasetError(f"{folder}: the {split} split holds no images")
    return LabelledImages(source=source, kind="cifar10", split=split, classes=classes,
                          items=images, labels=labels)
