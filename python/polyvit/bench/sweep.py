"""The measurement: every runner on the same inputs, warm-up, then interleaved timed rounds.

Rounds are interleaved across runners (runner order rotated each round), so machine drift and
noise from other processes hit every runner alike; each runner's output on the sweep's input is
also checked against the float64 reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .. import backends, parity
from ..config import ViTConfig
from . import peers

Fn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Runner:
    """One thing to time: a polyvit backend at a precision, or a peer at a precision."""
    name: str
    kind: str                     # "polyvit" or "peer"
    precision: str
    build: Callable[[], Fn] = field(repr=False)
    fn: Fn | None = field(default=None, repr=False)
    error: str | None = None      # why it could not be set up

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    def prepare(self) -> bool:
        if self.fn is None and self.error is None:
            try:
                self.fn = self.build()
            except Exception as exc:  # a peer failing to set up must not stop the sweep
                self.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        return self.fn is not None


@dataclass
class Record:
    runner: str
    kind: str
    precision: str
    batch: int
    seconds: list[float]          # per timed call
    max_abs_error: float
    tolerance: float
    top1_agreement: float
    parity: str                   # "pass", "fail" or "n/a" (not an fp32 run)

    @property
    def ms_per_image(self) -> float:
        return 1000 * float(np.median(self.seconds)) / self.batch

    @property
    def spread_ms(self) -> tuple[float, float]:
        """(25th, 75th) percentile of ms per image."""
        q = np.percentile(self.seconds, [25, 75]) * 1000 / self.batch
        return float(q[0]), float(q[1])

    @property
    def images_per_second(self) -> float:
        return self.batch / float(np.median(self.seconds))

    def to_dict(self) -> dict:
        return {"runner": self.runner, "kind": self.kind, "precision": self.precision,
                "batch": self.batch, "ms_per_image": self.ms_per_image,
                "ms_per_image_iqr": list(self.spread_ms),
                "images_per_second": self.images_per_second, "rounds": len(self.seconds),
                "max_abs_error": self.max_abs_error, "tolerance": self.tolerance,
                "top1_agreement": self.top1_agreement, "parity": self.parity}


def polyvit_runners(names: list[str], precisions: list[str], cfg: ViTConfig,
                    weights: Mapping[str, np.ndarray], threads: int) -> list[Runner]:
    runners = []
    for name in names:
        cls = backends.backend_class(name)
        for precision in precisions:
            if precision not in cls.precisions:
                continue
            options = {"threads": threads} if "threads" in cls.options else {}

            def build(cls=cls, precision=precision, options=options) -> Fn:
                return cls(cfg, weights, precision, **options).forward
            runners.append(Runner(name, "polyvit", precision, build))
    return runners


def peer_runners(precisions: list[str], cfg: ViTConfig, weights: Mapping[str, np.ndarray],
                 threads: int, include_costly: bool) -> tuple[list[Runner], list[str]]:
    """(runners, notes on peers left out)."""
    runners, notes = [], []
    model = None
    export = None
    for name, modules, offered, builder, needs_onnx, costly in peers.PEERS:
        missing = [m for m in modules if not peers.installed(m)]
        if missing:
            notes.append(f"{name}: not installed ({', '.join(missing)}); pip install "
                         f"'polyvit[bench]'")
            continue
        if costly and not include_costly:
            notes.append(f"{name}: left out of the quick sweep (cold compile takes ~20 s)")
            continue
        if model is None:
            model = peers.idiomatic_torch_vit(cfg, weights)
        if needs_onnx and export is None:
            export = peers.OnnxExport(model, cfg)
        for precision in precisions:
            if precision not in offered:
                continue
            source = export if needs_onnx else model

            def build(builder=builder, source=source, precision=precision) -> Fn:
                return builder(source, precision, threads)
            runners.append(Runner(name, "peer", precision, build))
    return runners, notes


def plan_rounds(seconds_per_round: float, budget_seconds: float, minimum: int = 3,
                maximum: int = 50) -> int:
    """How many interleaved rounds fit the time budget of one batch size."""
    if seconds_per_round <= 0:
        return maximum
    return int(min(maximum, max(minimum, budget_seconds // seconds_per_round)))


def measure(runners: list[Runner], cfg: ViTConfig, weights: Mapping[str, np.ndarray],
            batch: int, budget_seconds: float, rounds: int | None = None,
            progress=None) -> list[Record]:
    """Warm up every runner on one input batch, then time interleaved rounds.

    progress: a tqdm-like bar; its total grows by the number of timed calls once planned."""
    images = parity.random_images(cfg, batch, seed=1000 + batch)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    active, outputs, per_round = [], {}, 0.0
    for r in runners:
        if not r.prepare():
            continue
        try:
            outputs[r.label] = np.asarray(r.fn(images), dtype=np.float32)  # warm-up + parity
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            continue
        # A second call plans the rounds: the first pays one-time costs (torch.compile's
        # compile, graph capture, kernel builds) that would shrink the plan to a few rounds.
        start = time.perf_counter()
        r.fn(images)
        per_round += time.perf_counter() - start
        active.append(r)
    n = rounds or plan_rounds(per_round, budget_seconds)
    if progress is not None:
        progress.total = (progress.total or 0) + n * len(active)
        progress.refresh()
    times: dict[str, list[float]] = {r.label: [] for r in active}
    for i in range(n):
        shift = i % max(1, len(active))
        for r in active[shift:] + active[:shift]:
            start = time.perf_counter()
            r.fn(images)
            times[r.label].append(time.perf_counter() - start)
            if progress is not None:
                progress.update(1)
    records = []
    for r in active:
        result = parity.compare(outputs[r.label], oracle, tol)
        verdict = ("pass" if result.passed else "fail") if r.precision == "fp32" else "n/a"
        records.append(Record(r.name, r.kind, r.precision, batch, times[r.label],
                              result.max_abs_error, tol, result.top1_agreement, verdict))
    return records
