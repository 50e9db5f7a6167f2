"""The sycl backend against the C++ backend, its peer on this CPU: ViT-S/32 fp32 at batch 1 and
32, same process, same weights and inputs, interleaved rounds (polyvit.bench.sweep rotates the
runner order each round), medians and the ratio of medians. torch eager runs alongside as a
fixed point; while the cpp backend is not available here the sycl/cpp ratio is reported as
pending. Goal (issue 5): sycl within 1.5x of cpp's time at batch 32.

    .venv/bin/python benchmarks/sycl_vs_cpp.py [--rounds 15] [--config vit_small_patch32_224]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform

from polyvit import backends
from polyvit.bench import peers
from polyvit.bench.sweep import Runner, measure, polyvit_runners
from polyvit.config import get_config
from polyvit.weights import random_weights

GOAL = 1.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--config", default="vit_small_patch32_224")
    p.add_argument("--batch-sizes", default="1,32")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()

    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    available = {n for n, (ok, _) in backends.available_backends().items() if ok}
    if "sycl" not in available:
        raise SystemExit(f"sycl is not available: {backends.available_backends()['sycl'][1]}")
    names = [n for n in ("sycl", "cpp") if n in available]
    runners = polyvit_runners(names, ["fp32"], cfg, weights, args.threads)
    model = peers.idiomatic_torch_vit(cfg, weights)
    runners.append(Runner("torch eager", "peer", "fp32",
                          lambda: peers.torch_eager(model, "fp32", args.threads)))

    print(f"{cfg.name} fp32, {args.rounds} interleaved rounds, {args.threads} threads, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{datetime.date.today()}")
    print(f"{'batch':>5} {'runner':<12} {'ms/img':>8} {'IQR':>15} {'img/s':>7} {'parity':>6}")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        records = {r.runner: r for r in measure(runners, cfg, weights, batch, 0, args.rounds)}
        for r in records.values():
            lo, hi = r.spread_ms
            print(f"{batch:>5} {r.runner:<12} {r.ms_per_image:8.2f} {lo:7.2f}-{hi:<7.2f} "
                  f"{r.images_per_second:7.1f} {r.parity:>6}")
        sycl = records["sycl"].ms_per_image
        if "cpp" in records:
            ratio = sycl / records["cpp"].ms_per_image
            verdict = "" if batch != 32 else f" (goal <= {GOAL}: {'met' if ratio <= GOAL else 'missed'})"
            print(f"{'':>5} sycl / cpp  {ratio:.2f}x{verdict}")
        else:
            print(f"{'':>5} sycl / cpp  pending: the cpp backend is not available here")
        print(f"{'':>5} sycl / torch eager  {sycl / records['torch eager'].ms_per_image:.2f}x")


if __name__ == "__main__":
    main()
