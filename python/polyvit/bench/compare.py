"""What the CPU benchmark scripts in benchmarks/ share: their options and one comparison run
(runners measured per batch size by sweep.measure, the measurement table, then the speed-ups of
our runner over every other as the median of per-round ratios)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import backends
from ..backends._native import default_threads
from ..config import ViTConfig
from . import report
from .sweep import Record, Runner, measure


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="vit_small_patch32_224")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="threads of every runner (default: OMP_NUM_THREADS, else every core)")
    p.add_argument("--rounds", type=int,
                   help="interleaved rounds per batch size (default: as many as --seconds allows)")
    p.add_argument("--seconds", type=float, default=30.0,
                   help="time budget of each batch size's rounds (default 30)")
    p.add_argument("--pause", type=float, default=0.1,
                   help="idle seconds after each timed call, so thread pools that spin after a "
                        "call are quiet before the next runner (default 0.1)")
    p.add_argument("--json", help="also write results.json-style figures to this file")
    return p


def compare(runners: list[Runner], cfg: ViTConfig, weights: Mapping[str, np.ndarray],
            args: argparse.Namespace, ours: str, notes: Sequence[str] = ()) -> list[Record]:
    """Measure the runners at every --batch, printing as it goes; `ours` names the runner whose
    speed-ups are printed."""
    info = report.machine()
    print(f"{cfg.name}, {args.threads} threads, {info['cpu']}, {info['cores']} cores, "
          f"{info['date']}; medians of interleaved rounds")
    for note in notes:
        print(note)
    records: list[Record] = []
    for batch in args.batch:
        found = measure(runners, cfg, weights, batch, args.seconds, args.rounds, args.pause)
        records += found
        if found:  # the runners of one batch size share their rounds
            print(f"\nbatch {batch}: {len(found[0].seconds)} rounds, other processes used "
                  f"{found[0].load:.2f} cores")
            print("\n".join(report.measurements(found) + [""] + report.speedups(found, ours)))
    for r in runners:
        if r.error:
            print(f"could not run {r.label}: {r.error}")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        report.write_json(Path(args.json), info, settings, records,
                          backends.available_backends(), list(notes))
    return records


def exit_code(records: list[Record]) -> int:
    """1, after saying why, when a polyvit run fails parity: its speed would mean nothing."""
    failures = report.parity_failures(records)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failures else 0
