"""What vit-bench and the benchmark scripts time: runners (a polyvit backend or a peer at a
precision, built lazily), measured on one input batch by the interleaved-rounds engine
(rounds.py), each runner's output also checked against the float64 reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .. import backends, parity
from ..config import ViTConfig
from .rounds import describe, quartiles, run_rounds

Fn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Runner:
    """One thing to time: a polyvit backend at a precision, or a peer at a precision."""
    name: str
    kind: str                     # "polyvit" or "peer"
    precision: str
    build: Callable[[], Fn] = field(repr=False)
    fn: Fn | None = field(default=None, repr=False)
    error: str | None = None      # why it could not be set up or run

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    def prepare(self) -> bool:
        if self.fn is None and self.error is None:
            try:
                self.fn = self.build()
            except Exception as exc:  # a peer failing to set up must not stop the sweep
                self.error = describe(exc)
        return self.fn is not None


@dataclass
class Record:
    runner: str
    kind: str
    precision: str
    batch: int
    seconds: list[float]          # per timed call, one per round
    max_abs_error: float
    tolerance: float
    top1_agreement: float
    parity: str                   # "pass", "fail" or "n/a" (not an fp32 run)
    load: float = 0.0             # cores other processes kept busy during these rounds
    # reduced precisions: agreement with the reference logits (parity.agreement)
    cosine: float | None = None       # lowest cosine similarity over the batch
    clear_top1: float | None = None   # share of the clear top-1 leads kept (None: no clear lead)

    @property
    def label(self) -> str:
        return f"{self.runner} {self.precision}"

    @property
    def ms_per_image(self) -> float:
        return 1000 * float(np.median(self.seconds)) / self.batch

    @property
    def spread_ms(self) -> tuple[float, float]:
        """(25th, 75th) percentile of ms per image."""
        lo, _, hi = quartiles(self.seconds)
        return 1000 * lo / self.batch, 1000 * hi / self.batch

    @property
    def images_per_second(self) -> float:
        return self.batch / float(np.median(self.seconds))

    def to_dict(self) -> dict:
        return {"runner": self.runner, "kind": self.kind, "precision": self.precision,
                "batch": self.batch, "ms_per_image": self.ms_per_image,
                "ms_per_image_iqr": list(self.spread_ms),
                "images_per_second": self.images_per_second, "rounds": len(self.seconds),
                "max_abs_error": self.max_abs_error, "tolerance": self.tolerance,
                "top1_agreement": self.top1_agreement, "parity": self.parity,
                "cosine_min": self.cosine, "clear_top1": self.clear_top1,
                "other_load_cores": self.load}


def polyvit_runners(names: list[str], precisions: list[str], cfg: ViTConfig,
                    weights: Mapping[str, np.ndarray], threads: int) -> list[Runner]:
    runners = []
    for name in names:
        cls = backends.backend_class(name)
        for precision in precisions:
            if precision not in cls.precisions:
                continue
            options = {"threads": threads} if "threads" in cls.option_names() else {}

            def build(cls=cls, precision=precision, options=options) -> Fn:
                return cls(cfg, weights, precision, **options).forward
            runners.append(Runner(name, "polyvit", precision, build))
    return runners


def inputs(cfg: ViTConfig, batch: int) -> np.ndarray:
    """The images every runner is timed on at this batch size (the int8 peers calibrate on the
    batch-32 ones: the inputs polyvit's int8 sees)."""
    return parity.random_images(cfg, batch, seed=1000 + batch)


def measure(runners: list[Runner], cfg: ViTConfig, weights: Mapping[str, np.ndarray],
            batch: int, budget_seconds: float, rounds: int | None = None, pause: float = 0.0,
            progress=None) -> list[Record]:
    """Every runner that sets up, warmed up and timed in interleaved rounds on one input batch
    (see rounds.run_rounds); a runner that fails keeps its reason in .error."""
    images = inputs(cfg, batch)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    active = {r.label: r for r in runners if r.prepare()}
    result = run_rounds({label: lambda r=r: r.fn(images) for label, r in active.items()}, rounds,
                        budget_seconds=budget_seconds, pause=pause, progress=progress)
    for label, error in result.errors.items():
        active[label].error = error
    records = []
    for label, seconds in result.seconds.items():
        r = active[label]
        check = parity.compare(np.asarray(result.outputs[label], dtype=np.float32), oracle, tol)
        verdict = ("pass" if check.passed else "fail") if r.precision == "fp32" else "n/a"
        cosine = clear = None
        if r.precision in parity.REDUCED:
            found = parity.agreement(np.asarray(result.outputs[label], np.float32),
                                     oracle.astype(np.float32),
                                     parity.REDUCED[r.precision].error_std)
            cosine = float(found.cosine.min())
            clear = float(found.top1[found.clear].mean()) if found.clear.any() else None
        records.append(Record(r.name, r.kind, r.precision, batch, seconds, check.max_abs_error,
                              tol, check.top1_agreement, verdict, result.load, cosine, clear))
    return records
