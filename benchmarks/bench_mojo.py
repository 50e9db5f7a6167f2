"""The Mojo backend against its peers (the C++ backend `cpp`, torch eager), in one process, on
the same weights and images, in interleaved rounds: each round times every backend in turn, so
drift of the machine hits them alike. Prints per-backend medians and the median of the
per-round time ratios mojo / peer.

    python benchmarks/bench_mojo.py                       # ViT-S/32, batch 1 and 32
    python benchmarks/bench_mojo.py --batch 32 --rounds 9 --peers cpp,torch --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights

# calls per round: enough for about a second of work per backend at either batch size
CALLS = {1: 20, 32: 2}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(model, images: np.ndarray, calls: int) -> float:
    """Median seconds of one forward over `calls` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="vit_small_patch32_224")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", default="cpp,torch",
                        help="comma-separated peers; unavailable ones are reported and skipped")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    available = polyvit.available_backends()
    names = ["mojo"]
    for peer in [p for p in args.peers.split(",") if p]:
        ok, reason = available.get(peer, (False, "not registered on this branch"))
        if ok:
            names.append(peer)
        else:
            print(f"peer {peer} skipped: {reason}")
    models = {}
    for name in names:
        start = time.perf_counter()
        models[name] = polyvit.load(weights, backend=name, config=cfg, threads=args.threads)
        print(f"{name}: loaded in {time.perf_counter() - start:.2f} s")

    results = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(),
               "cores": os.cpu_count(), "threads": args.threads, "config": cfg.name,
               "python": sys.version.split()[0], "batches": {}}
    for batch in args.batch:
        images = parity.random_images(cfg, batch, seed=1)
        oracle, tol = parity.reference_outputs(cfg, weights, images[:2])
        for name, model in models.items():  # warm up and check every backend is right
            verdict = parity.compare(model(images)[:2], oracle, tol)
            assert verdict.passed, f"{name} fails parity: {verdict.describe()}"
        calls = CALLS.get(batch, max(2, 32 // batch))
        per_round: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                time.sleep(0.05)  # let the previous backend's spinning threads go idle
                per_round[name].append(time_calls(model, images, calls))
        print(f"\n{cfg.name}, batch {batch}, {args.threads} threads, {args.rounds} rounds "
              f"x {calls} calls")
        summary = {}
        for name, times in per_round.items():
            med = statistics.median(times)
            summary[name] = {"median_ms": 1e3 * med, "min_ms": 1e3 * min(times),
                             "max_ms": 1e3 * max(times), "img_per_s": batch / med}
            print(f"  {name:6s} {1e3 * med:9.2f} ms  ({1e3 * min(times):.2f}..{1e3 * max(times):.2f})"
                  f"  {batch / med:8.1f} img/s")
        for peer in names[1:]:
            ratios = [m / p for m, p in zip(per_round["mojo"], per_round[peer])]
            ratio = statistics.median(ratios)
            summary[f"mojo/{peer}"] = {"median": ratio, "min": min(ratios), "max": max(ratios)}
            print(f"  time mojo / {peer}: {ratio:.3f}  ({min(ratios):.3f}..{max(ratios):.3f})")
        results["batches"][str(batch)] = summary
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
