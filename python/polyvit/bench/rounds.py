"""The interleaved-rounds engine every benchmark shares (vit-bench and the scripts in
benchmarks/): warm up each call, plan the rounds from one more call, then time rounds in which
every call runs once, the order rotated each round, so drift of the machine and noise from
other processes hit every call alike. Times of one round ran within seconds of each other,
which makes the per-round ratio of two calls (paired_ratio) steadier than a ratio of medians.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

Call = Callable[[], Any]


@dataclass
class Rounds:
    seconds: dict[str, list[float]]  # per label, one time per round, aligned by round
    outputs: dict[str, Any]          # each label's first result, to check before trusting its time
    errors: dict[str, str]           # labels that raised while warming up, left out of the rounds
    load: float                      # cores other processes kept busy during the rounds


def plan_rounds(seconds_per_round: float, budget_seconds: float, minimum: int = 3,
                maximum: int = 50) -> int:
    """How many interleaved rounds fit the time budget."""
    if seconds_per_round <= 0:
        return maximum
    return int(min(maximum, max(minimum, budget_seconds // seconds_per_round)))


def wall_clock(call: Call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def describe(exc: BaseException) -> str:
    """One short line for a report."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


def busy_seconds() -> float:
    """CPU seconds every process has used so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_seconds() -> float:
    """CPU seconds this process has used so far."""
    return sum(os.times()[:2])


def run_rounds(calls: Mapping[str, Call], rounds: int | None = None, *,
               budget_seconds: float = 10.0, warmups: int = 1, pause: float = 0.0,
               clock: Callable[[Call], float] = wall_clock, progress=None) -> Rounds:
    """Time every call in interleaved rounds.

    rounds:   how many; None plans them so the rounds take about budget_seconds.
    warmups:  untimed calls of each, in order, before the planning call (the first pays one-time
              costs: compilation, graph capture, kernel builds, lazily packed weights).
    pause:    idle seconds after each timed call, so a runtime whose threads spin after a call
              (OpenMP, ONNX Runtime) does not slow the one timed next.
    clock:    seconds of one call; wall time by default, a GPU call may time itself with events.
    progress: a tqdm-like bar; its total grows by the number of timed calls once planned.
    """
    outputs, errors, planned = {}, {}, {}
    for label, call in calls.items():
        try:
            outputs[label] = call()
            for _ in range(warmups - 1):
                call()
            planned[label] = clock(call)
        except Exception as exc:  # one runner failing must not stop the others
            errors[label] = describe(exc)
            outputs.pop(label, None)
    active = list(planned)
    n = rounds or plan_rounds(sum(planned.values()) + pause * len(active), budget_seconds)
    if progress is not None:
        progress.total = (progress.total or 0) + n * len(active)
        progress.refresh()
    seconds: dict[str, list[float]] = {label: [] for label in active}
    start_wall, start_busy, start_own = time.perf_counter(), busy_seconds(), own_seconds()
    for i in range(n):
        shift = i % max(1, len(active))
        for label in active[shift:] + active[:shift]:
            seconds[label].append(clock(calls[label]))
            if pause:
                time.sleep(pause)
            if progress is not None:
                progress.update(1)
    others = (busy_seconds() - start_busy) - (own_seconds() - start_own)
    load = max(0.0, others / max(time.perf_counter() - start_wall, 1e-9))
    return Rounds(seconds, outputs, errors, load)


def quartiles(seconds: list[float]) -> tuple[float, float, float]:
    """(25th percentile, median, 75th percentile)."""
    q = np.percentile(seconds, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator, round by round."""
    return float(np.median(np.asarray(numerator) / np.asarray(denominator)))
