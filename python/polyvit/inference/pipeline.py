"""The local engine: decode in parallel workers while the model runs, rows out in input order.

    paths ──► decode workers (threads or processes, a bounded window of chunks in flight)
          ──► batches of `batch_size` decoded images (broken ones become error rows in place)
          ──► model forward (releases the GIL: the workers keep decoding the next batches)
          ──► top-k rows, in the order the paths were listed

Decoding is JPEG draft mode by default (a photo far larger than the model input is decoded at
1/2, 1/4 or 1/8 scale, as timm and torchvision pipelines do). Timing is kept in Stats: how long
the model ran, and how long it waited for its next batch.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..backends._native import cores
from ..config import ViTConfig
from ..errors import ImageError
from ..labels import class_names
from ..preprocessing import preprocess
from .output import error_row

WORKER_KINDS = ("thread", "process")
CHUNK = 8  # paths per worker task: amortises the hand-off, small enough to keep order cheap


@dataclass
class Stats:
    """What a job did and where its time went (seconds)."""
    rows: int = 0
    classified: int = 0
    errors: int = 0
    wall: float = 0.0
    model: float = 0.0        # inside the model's forward
    waiting: float = 0.0      # the model idle, waiting for decoded images
    error_kinds: collections.Counter = field(default_factory=collections.Counter)

    model_slots: int = 1      # models running at once (Ray actors)
    waiting_known: bool = True  # the Ray engine sees its actors' model time, not their waits

    @property
    def images_per_second(self) -> float:
        return self.rows / self.wall if self.wall else 0.0

    @property
    def busy_share(self) -> float:
        """The share of the job's wall time the model(s) spent in forward passes."""
        return self.model / (self.wall * self.model_slots) if self.wall else 0.0

    @property
    def waiting_share(self) -> float:
        return self.waiting / self.wall if self.wall else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "classified": self.classified, "errors": self.errors,
                "error_kinds": dict(self.error_kinds), "seconds": self.wall,
                "images_per_second": self.images_per_second, "model_seconds": self.model,
                "model_busy_share": self.busy_share,
                "waiting_share": self.waiting_share if self.waiting_known else None}

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in self.error_kinds.most_common())
        waiting = (f", waiting for input {100 * self.waiting_share:.0f}%" if self.waiting_known
                   else "")
        return (f"{self.rows} row(s): {self.classified} classified, {self.errors} error(s)"
                f"{f' ({kinds})' if kinds else ''} | {self.wall:.1f} s, "
                f"{self.images_per_second:.1f} img/s | model busy {100 * self.busy_share:.0f}% "
                f"of the job{waiting}")


def error_kind(message: str) -> str:
    """A short name for an error message, for the summary's counts."""
    text = message.lower()
    for key, kind in (("no such file", "missing"), ("permission", "no permission"),
                      ("decompression bomb", "too large"), ("empty file", "empty"),
                      ("not an image", "not an image"),
                      ("truncated", "truncated or corrupt")):
        if key in text:
            return kind
    return "other"


# ---- decoding -------------------------------------------------------------------------------------

def decode_chunk(paths: Sequence[Any], config: ViTConfig, crops: str, draft: bool,
                 step: Callable[..., np.ndarray] = preprocess,
                 names: Sequence[str] | None = None) -> list[tuple[np.ndarray | None, str]]:
    """Each path (or in-memory image) -> (step's array, "") or (None, the error): a broken
    image never raises. step: preprocess (model input) or prepare (uint8 pixels, normalised
    later). names: what the errors call the images (default the paths)."""
    out: list[tuple[np.ndarray | None, str]] = []
    for path, name in zip(paths, names if names is not None else paths):
        try:
            out.append((step(path, config, crops=crops, draft=draft), ""))
        except ImageError as exc:
            out.append((None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - any decoder failure belongs to its row
            out.append((None, f"{name}: cannot decode ({type(exc).__name__}: {exc})"))
    return out


def default_workers() -> int:
    return max(1, min(8, cores()))


class Decoder:
    """Decodes paths in `workers` threads or processes, yielding results in input order with at
    most `window` chunks in flight (bounded memory whatever the number of paths)."""

    def __init__(self, config: ViTConfig, workers: int | None = None, kind: str = "thread",
                 crops: str = "center", draft: bool = True, window: int | None = None) -> None:
        if kind not in WORKER_KINDS:
            raise ValueError(f"worker kind must be one of {WORKER_KINDS}, got {kind!r}")
        self.config, self.kind, self.crops, self.draft = config, kind, crops, draft
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (decode inline) or more, got {workers}")
        self.window = window or max(4, 4 * self.workers)

    def _pool(self) -> Any:  # a concurrent.futures executor, or None to decode inline
        # imported here, not at the top: every `import polyvit` would pay for them
        import concurrent.futures as cf
        import multiprocessing

        if self.workers == 0:
            return None
        if self.kind == "thread":
            return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="polyvit-decode")
        # spawn: the parent may hold OpenMP or torch threads, which fork does not carry safely
        return cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def __call__(self, paths: Iterable[str], stats: Stats | None = None
                 ) -> Iterator[tuple[str, np.ndarray | None, str]]:
        stats = stats if stats is not None else Stats()
        chunks = _chunked(paths, CHUNK)
        pool = self._pool()
        if pool is None:
            for chunk in chunks:
                yield from zip(chunk, *zip(*decode_chunk(chunk, self.config, self.crops, self.draft)))
            return
        pending: collections.deque = collections.deque()
        try:
            for chunk in chunks:
                pending.append((chunk, pool.submit(decode_chunk, chunk, self.config,
                                                   self.crops, self.draft)))
                if len(pending) >= self.window:
                    yield from self._take(pending.popleft(), stats)
            while pending:
                yield from self._take(pending.popleft(), stats)
        finally:
            for _, f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _take(item, stats: Stats) -> Iterator[tuple[str, np.ndarray | None, str]]:
        chunk, future = item
        start = time.perf_counter()
        results = future.result()
        stats.waiting += time.perf_counter() - start
        for path, (array, error) in zip(chunk, results):
            yield path, array, error


def _chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---- classifying ----------------------------------------------------------------------------------

def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(logits: np.ndarray, crops: int) -> np.ndarray:
    """(n * crops, classes) logits -> (n, classes) probabilities, softmax averaged over crops."""
    return softmax(logits).reshape(-1, crops, logits.shape[-1]).mean(axis=1)


def rows_for(paths: Sequence[str], logits: np.ndarray, topk: int, labels: Sequence[str],
             crops: int = 1, features: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Rows for classified images: (n * crops, classes) logits -> top-k of the softmax averaged
    over crops (and the crops' mean feature vector)."""
    probs = probabilities(logits, crops)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :topk]
    if features is not None:
        features = features.reshape(len(paths), crops, -1).mean(axis=1)
    rows = []
    for i, path in enumerate(paths):
        idx = order[i]
        row = {"path": path, "topk_indices": [int(j) for j in idx],
               "topk_labels": [labels[j] for j in idx],
               "topk_probs": [float(probs[i, j]) for j in idx], "error": ""}
        if features is not None:
            row["features"] = features[i].astype(np.float32).tolist()
        rows.append(row)
    return rows


def classify(model: Any, decoded: Iterable[tuple[str, np.ndarray | None, str]], batch_size: int,
             topk: int, features: bool = False, crops: int = 1, stats: Stats | None = None
             ) -> Iterator[list[dict[str, Any]]]:
    """Decoded items -> lists of rows in input order, one model call per `batch_size` images;
    an error row waits for the batch it sits in, so the order is kept."""
    stats = stats if stats is not None else Stats()
    labels = model.class_names() if hasattr(model, "class_names") \
        else class_names(model.config.num_classes)
    items: list[tuple[str, np.ndarray | None, str]] = []
    good = 0
    for item in decoded:
        items.append(item)
        good += item[1] is not None
        if good == batch_size:
            yield classify_batch(model, items, topk, labels, features, crops, stats)
            items, good = [], 0
    if items:
        yield classify_batch(model, items, topk, labels, features, crops, stats)


def classify_batch(model: Any, items: Sequence[tuple[str, np.ndarray | None, str]], topk: int,
                   labels: Sequence[str], features: bool, crops: int, stats: Stats
                   ) -> list[dict[str, Any]]:
    """One forward pass over the decoded items' images -> their rows in order (an item without
    an image, one that failed to decode, gets its error row); counts go to stats."""
    ok = [(path, array) for path, array, _ in items if array is not None]
    by_path: dict[int, dict[str, Any]] = {}
    if ok:
        x = np.stack([a for _, a in ok])
        x = x.reshape(-1, *x.shape[-3:])  # five crops: (n, 5, 3, H, W) -> (n * 5, 3, H, W)
        start = time.perf_counter()
        if features:
            logits, feats = model.logits_and_features(x)
        else:
            logits, feats = model(x), None
        stats.model += time.perf_counter() - start
        good_rows = iter(rows_for([p for p, _ in ok], logits, topk, labels, crops, feats))
        by_path = {i: next(good_rows) for i, (_, a, _) in enumerate(items) if a is not None}
    rows = [by_path[i] if i in by_path else error_row(path, err)
            for i, (path, _, err) in enumerate(items)]
    stats.rows += len(rows)
    stats.classified += len(by_path)
    for r in rows:
        if r["error"]:
            stats.errors += 1
            stats.error_kinds[error_kind(r["error"])] += 1
    return rows


def run_local(model: Any, paths: Iterable[str], *, batch_size: int = 32, topk: int = 5,
              features: bool = False, crops: str = "center", draft: bool = True,
              workers: int | None = None, worker_kind: str = "thread",
              stats: Stats | None = None) -> Iterator[list[dict[str, Any]]]:
    """The whole local job as a stream of row lists (see the module docstring)."""
    stats = stats if stats is not None else Stats()
    decoder = Decoder(model.config, workers, worker_kind, crops, draft)
    start = time.perf_counter()
    for rows in classify(model, decoder(paths, stats), batch_size, topk, features,
                         5 if crops == "five" else 1, stats):
        stats.wall = time.perf_counter() - start
        yield rows
    stats.wall = time.perf_counter() - start
