"""GEMM micro-benchmark of the C++ backend: GFLOP/s per ViT linear layer shape against the
machine's peak, numpy's BLAS (OpenBLAS) measured alongside in the same run.

    flock /tmp/polyvit-cpu.lock python benchmarks/bench_gemm.py [--config vit_small_patch32_224]
        [--batch 1 32] [--precision fp32 bf16 int8] [--threads N] [--peak 230] [--seconds 0.5] [--reps 10]

Each row: the layer, M x K x N, median time of interleaved rounds (polyvit.bench.rounds; the
weights are packed before timing), GFLOP/s, the fraction of
--peak (fp32 FMA peak of all threads; bf16 and int8 rows are still compared to the fp32 peak),
and torch's GFLOP/s on the same fp32 shape (MKL/oneDNN sgemm; torch shares our OpenMP
runtime, so its threads do not spin against ours the way a second BLAS pool would).
"""

from __future__ import annotations

import argparse

import numpy as np


def shapes(cfg, batch: int):
    t, d, m = batch * cfg.num_tokens, cfg.embed_dim, cfg.mlp_dim
    return [("patch", batch * cfg.num_patches, cfg.patch_dim, d), ("qkv", t, d, 3 * d),
            ("proj", t, d, d), ("fc1", t, d, m), ("fc2", t, m, d),
            ("head", batch, d, cfg.num_classes)]


def main() -> None:
    import torch

    from polyvit import _cpu
    from polyvit.bench.rounds import run_rounds
    from polyvit.config import get_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="vit_small_patch32_224")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--precision", nargs="+", default=["fp32"])
    p.add_argument("--epilogue", default="none", help="none, gelu_erf, gelu_tanh")
    p.add_argument("--threads", type=int, default=0, help="0: OMP_NUM_THREADS / all cores")
    p.add_argument("--isa", default="auto")
    p.add_argument("--peak", type=float, default=230.0, help="fp32 GFLOP/s peak of the machine")
    p.add_argument("--rounds", type=int, help="default: as many as --seconds allows")
    p.add_argument("--seconds", type=float, default=0.5, help="time budget of each shape's rounds")
    p.add_argument("--reps", type=int, default=10, help="calls of a layer per round")
    args = p.parse_args()

    cfg = get_config(args.config)
    torch.set_num_threads(args.threads or _cpu.max_threads())
    rng = np.random.default_rng(0)
    print(f"{args.config}, threads {args.threads or _cpu.max_threads()}, isa {args.isa}, "
          f"peak {args.peak:.0f} GFLOP/s, median of interleaved rounds")
    print(f"{'layer':6} {'prec':5} {'M x K x N':>18} {'ms':>8} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'torch':>8}")
    for batch in args.batch:
        for name, m, k, n in shapes(cfg, batch):
            x = rng.standard_normal((m, k), dtype=np.float32)
            w = (rng.standard_normal((n, k), dtype=np.float32) / np.sqrt(k)).astype(np.float32)
            b = rng.standard_normal(n, dtype=np.float32)
            out = np.empty((m, n), np.float32)
            layers = {pr: _cpu.Linear(w, b, pr, args.isa, args.threads) for pr in args.precision}
            xt, wt = torch.from_numpy(x), torch.from_numpy(w).T
            ot = torch.from_numpy(out)
            ops = {pr: lambda layer=layer: layer(x, args.epilogue, None, out)
                   for pr, layer in layers.items()}
            ops["torch"] = lambda: torch.matmul(xt, wt, out=ot)
            # a round times --reps calls back to back: one small GEMM takes microseconds
            calls = {name: lambda op=op: [op() for _ in range(args.reps)]
                     for name, op in ops.items()}
            times = run_rounds(calls, args.rounds, budget_seconds=args.seconds).seconds
            flop = 2.0 * m * k * n
            ref = flop / (np.median(times["torch"]) / args.reps) / 1e9
            for pr in layers:
                t = float(np.median(times[pr])) / args.reps
                gf = flop / t / 1e9
                print(f"{name:6} {pr:5} {f'{m} x {k} x {n}':>18} {1e3 * t:8.3f} {gf:8.1f} "
                      f"{gf / args.peak:8.0%} {ref:8.1f}")


if __name__ == "__main__":
    main()
