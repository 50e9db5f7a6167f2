"""Accuracy of any weights on a labelled dataset, on any backend and precision (vit-eval).

    from polyvit.datasets import open_dataset
    from polyvit.evaluation import evaluate
    model = polyvit.load("weights/vit_digits.safetensors", backend="cpp", precision="int8")
    report = evaluate(model, open_dataset("digits", "test"))
    print(report["top1"], report["top5"], report["per_class"])

Images are decoded and preprocessed by polyvit.preprocess (the checkpoint's rule) in a pool of
threads, a batch ahead of the model; an unreadable image is skipped and counted. crops="five"
averages the softmax over the four corner crops and the center crop (the seed checkpoint's
evaluation). The loss is the mean cross-entropy -log p(label) of those probabilities.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np

from .datasets import LabelledImages
from .errors import DatasetError, ImageError
from .inference.pipeline import probabilities, softmax  # noqa: F401 (softmax: for callers)
from .preprocessing import preprocess


def check_classes(model: Any, data: LabelledImages) -> None:
    """The model's head must score exactly the dataset's classes, in the same order."""
    c = model.config.num_classes
    if c != len(data.classes):
        raise DatasetError(f"the model scores {c} classes, {data.describe()}; evaluate it on "
                           "the dataset it was trained for")
    recorded = getattr(model, "labels", None)
    if recorded is not None and list(recorded) != list(data.classes):
        raise DatasetError(f"the model's classes {recorded[:5]}... differ from the dataset's "
                           f"{data.classes[:5]}... (names or order)")


def _decoded(data: LabelledImages, cfg, crops: str, batch_size: int, workers: int,
             skipped: list[tuple[str, str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, labels) batches in dataset order; decoding runs one batch ahead."""
    def one(i: int):
        try:
            return preprocess(data.items[i], cfg, crops=crops)
        except (ImageError, OSError, ValueError) as exc:
            item = data.items[i]
            skipped.append((item if isinstance(item, str) else f"item {i}", str(exc)))
            return None

    n = len(data)
    chunks = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = [pool.map(one, chunks[0])] if chunks else []
        for k in range(len(chunks)):
            if k + 1 < len(chunks):
                pending.append(pool.map(one, chunks[k + 1]))
            arrays = list(pending.pop(0))
            keep = [j for j, a in enumerate(arrays) if a is not None]
            if keep:
                idx = np.asarray([chunks[k][j] for j in keep])
                yield np.stack([arrays[j] for j in keep]), np.asarray(data.labels)[idx]


def evaluate(model: Any, data: LabelledImages, crops: str = "center", batch_size: int = 64,
             workers: int = 4, progress: bool = False) -> dict[str, Any]:
    """top1, top5, loss, per-class top-1, n (images scored), skipped, img/s of `model` on `data`."""
    if crops not in ("center", "five"):
        raise ValueError(f"crops must be 'center' or 'five', got {crops!r}")
    check_classes(model, data)
    c = model.config.num_classes
    k = min(5, c)
    hits1 = np.zeros(c, np.int64)
    counts = np.zeros(c, np.int64)
    hits5 = 0
    loss = 0.0
    skipped: list[tuple[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(data), unit="img", desc=f"eval {model.backend} {model.precision}",
                   leave=False)
    model_seconds = 0.0
    start = time.perf_counter()
    for x, y in _decoded(data, model.config, crops, batch_size, workers, skipped):
        views = x.shape[1] if crops == "five" else 1
        t0 = time.perf_counter()
        logits = model(x.reshape(-1, *x.shape[-3:]))
        model_seconds += time.perf_counter() - t0
        probs = probabilities(logits, views)
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        hits5 += int((top == y[:, None]).any(axis=1).sum())
        np.add.at(hits1, y, top[:, 0] == y)
        np.add.at(counts, y, 1)
        loss -= float(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300)).sum())
        if bar is not None:
            bar.update(len(y))
    if bar is not None:
        bar.close()
    n = int(counts.sum())
    if n == 0:
        raise DatasetError(f"{data.describe()}: none of its images could be decoded "
                           f"(first: {skipped[0][0]}: {skipped[0][1]})" if skipped else
                           f"{data.describe()}: no images")
    seconds = time.perf_counter() - start
    return {
        "top1": float(hits1.sum() / n), "top5": float(hits5 / n), "loss": loss / n, "n": n,
        "skipped": len(skipped), "skipped_items": [f"{i}: {r}" for i, r in sorted(skipped)[:20]],
        "per_class": {name: (float(h / m) if m else None)
                      for name, h, m in zip(data.classes, hits1, counts)},
        "backend": model.backend, "precision": model.precision, "crops": crops,
        "img_per_s": n / max(seconds, 1e-9), "model_ms_per_img": 1000 * model_seconds / n,
    }
