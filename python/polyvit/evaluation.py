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


def top_and_p_label(probs: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, classes) probabilities -> the k best classes per image (n, k) and p(label) (n,):
    all the scores need, so a Ray actor sends back k + 1 numbers per image, not `classes`."""
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return top, probs[np.arange(len(labels)), labels]


class Scores:
    """Running top-1 / top-5 / loss / per-class counts over batches of scored images."""

    def __init__(self, num_classes: int) -> None:
        self.hits1 = np.zeros(num_classes, np.int64)
        self.counts = np.zeros(num_classes, np.int64)
        self.hits5 = 0
        self.loss = 0.0

    def add(self, top: np.ndarray, p_label: np.ndarray, labels: np.ndarray) -> None:
        self.hits5 += int((top == labels[:, None]).any(axis=1).sum())
        np.add.at(self.hits1, labels, top[:, 0] == labels)
        np.add.at(self.counts, labels, 1)
        self.loss -= float(np.log(np.maximum(p_label, 1e-300)).sum())

    def report(self, data: LabelledImages, skipped: list[tuple[str, str]], seconds: float,
               model_seconds: float, **extra: Any) -> dict[str, Any]:
        n = int(self.counts.sum())
        if n == 0:
            raise DatasetError(f"{data.describe()}: none of its images could be decoded "
                               f"(first: {skipped[0][0]}: {skipped[0][1]})" if skipped else
                               f"{data.describe()}: no images")
        return {
            "top1": float(self.hits1.sum() / n), "top5": float(self.hits5 / n),
            "loss": self.loss / n, "n": n, "skipped": len(skipped),
            "skipped_items": [f"{i}: {r}" for i, r in sorted(skipped)[:20]],
            "per_class": {name: (float(h / m) if m else None)
                          for name, h, m in zip(data.classes, self.hits1, self.counts)},
            **extra,
            "img_per_s": n / max(seconds, 1e-9), "model_ms_per_img": 1000 * model_seconds / n,
        }


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, leave=False)


def evaluate(model: Any, data: LabelledImages, crops: str = "center", batch_size: int = 64,
             workers: int = 4, progress: bool = False) -> dict[str, Any]:
    """top1, top5, loss, per-class top-1, n (images scored), skipped, img/s of `model` on `data`."""
    if crops not in ("center", "five"):
        raise ValueError(f"crops must be 'center' or 'five', got {crops!r}")
    check_classes(model, data)
    k = min(5, model.config.num_classes)
    scores = Scores(model.config.num_classes)
    skipped: list[tuple[str, str]] = []
    bar = _progress(progress, len(data), f"eval {model.backend} {model.precision}")
    model_seconds = 0.0
    start = time.perf_counter()
    for x, y in _decoded(data, model.config, crops, batch_size, workers, skipped):
        views = x.shape[1] if crops == "five" else 1
        t0 = time.perf_counter()
        logits = model(x.reshape(-1, *x.shape[-3:]))
        model_seconds += time.perf_counter() - t0
        scores.add(*top_and_p_label(probabilities(logits, views), y, k), y)
        if bar is not None:
            bar.update(len(y))
    if bar is not None:
        bar.close()
    return scores.report(data, skipped, time.perf_counter() - start, model_seconds,
                         backend=model.backend, precision=model.precision, crops=crops)


def evaluate_ray(weights: str, data: LabelledImages, *, backend: str = "torch",
                 precision: str = "fp32", options: dict[str, Any] | None = None,
                 crops: str = "center", batch_size: int = 64, actors: int = 1,
                 address: str | None = None, num_heads: int | None = None,
                 image_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """evaluate() on Ray Data: images decoded in Ray tasks, scored by `actors` model actors
    (one polyvit model each, loaded from `weights`), the counts summed here. The same report,
    the same numbers as evaluate() with the same backend and precision."""
    from types import SimpleNamespace

    from . import backends
    from .inference.ray_engine import run_ray_scores
    from .model import recorded_labels, resolve_weights

    if crops not in ("center", "five"):
        raise ValueError(f"crops must be 'center' or 'five', got {crops!r}")
    # checked here, before the cluster is involved: the arguments, that the weights read, and
    # the classes (the backend itself need only run on the actors' nodes)
    backends.backend_class(backend).check_arguments(precision, options or {})
    cfg, _, _ = resolve_weights(weights, None, num_heads, image_size)
    probe = SimpleNamespace(config=cfg, labels=recorded_labels(weights))
    check_classes(probe, data)
    scores = Scores(probe.config.num_classes)
    skipped: list[tuple[str, str]] = []
    bar = _progress(progress, len(data), f"eval {backend} {precision} (ray)")
    model_seconds = 0.0
    start = time.perf_counter()
    for batch in run_ray_scores(data, probe.config, weights=weights, backend=backend,
                                precision=precision, options=options or {}, crops=crops,
                                batch_size=batch_size, k=min(5, probe.config.num_classes),
                                actors=actors, address=address, num_heads=num_heads,
                                image_size=image_size):
        model_seconds += batch["model_seconds"]
        skipped += batch["skipped"]
        if len(batch["labels"]):
            scores.add(batch["top"], batch["p_label"], batch["labels"])
        if bar is not None:
            bar.update(len(batch["labels"]) + len(batch["skipped"]))
    if bar is not None:
        bar.close()
    return scores.report(data, skipped, time.perf_counter() - start, model_seconds,
                         backend=backend, precision=precision, crops=crops, engine="ray",
                         actors=actors, config=cfg.name)
