"""The CUDA backend against PyTorch on the same GPU, same weights, same process.

    python benchmarks/cuda_vs_torch.py                       # ViT-S/32, batch 1 32 256 1024
    python benchmarks/cuda_vs_torch.py --batches 1 --compile reduce-overhead --json out.json

Runners, timed in interleaved rounds (polyvit.bench.rounds: each round calls every runner once,
the order rotated), median reported:
  polyvit cuda fp32 / bf16   the backend, one CUDA graph per batch size, device input and output
  torch eager fp32           the idiomatic torch ViT (polyvit.bench.torch_peer) in fp32 (TF32
                             off: true fp32)
  torch eager bf16           the same under torch.autocast(bfloat16), SDPA attention
  torch.compile fp32 / bf16  the eager model compiled with each --compile mode
Ratios are the peer's time over polyvit's (above 1: polyvit is faster). docs/gpu.md says which
figures to record; the goals are in issue 4 (batch 1 fp32: at most 1/3 of torch eager and below
torch.compile reduce-overhead; batch 1024 bf16: at least torch eager autocast, aiming past
torch.compile max-autotune).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="vit_small_patch32_224")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256, 1024])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds per batch size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", nargs="*", default=["reduce-overhead", "max-autotune"],
                        help="torch.compile modes to add as peers (none: skip torch.compile)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    from polyvit.bench import peers

    why = peers.gpu_missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    import torch

    import polyvit
    from polyvit._cuda import DeviceArray
    from polyvit.backends.cuda_backend import CudaBackend
    from polyvit.bench import torch_peer
    from polyvit.bench.rounds import quartiles, run_rounds
    from polyvit.config import get_config
    from polyvit.parity import random_images
    from polyvit.weights import random_weights

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 peer computes in fp32, as we do
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda:0")
    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    ours = {p: CudaBackend(cfg, weights, p) for p in args.precisions}
    eager = torch_peer.vit(cfg, weights, device)
    runners = {}
    for p in args.precisions:
        runners[f"polyvit cuda {p}"] = lambda x, m=ours[p]: m.run(x, output="device")
        runners[f"torch eager {p}"] = peers.torch_eager(eager, p)
        for mode in (m for m in args.compile if m != "none"):
            runners[f"torch.compile {mode} {p}"] = peers.torch_compiled(eager, p, mode=mode)

    name = torch.cuda.get_device_name(device)
    print(f"# {cfg.name} on {name}, torch {torch.__version__}, polyvit {polyvit.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    rows = []
    for batch in args.batches:
        x = torch.from_numpy(random_images(cfg, batch, seed=batch)).to(device)
        # the warm-ups include torch.compile's compilation and our graph capture
        result = run_rounds({label: lambda run=run: run(x) for label, run in runners.items()},
                            args.rounds, warmups=max(1, args.warmup))
        for label, error in result.errors.items():
            print(f"  batch {batch:5d} {label:40s} could not run: {error}")
        # Agreement first: the peers must compute the same function.
        outputs = {label: out.numpy() if isinstance(out, DeviceArray) else out.float().cpu().numpy()
                   for label, out in result.outputs.items()}
        reference = outputs.get("torch eager fp32")
        for label, got in outputs.items():
            if reference is not None:
                print(f"  batch {batch:5d} {label:40s} max|d| vs torch eager fp32 "
                      f"{np.max(np.abs(got - reference)):.3g}")
        for label, seconds in result.seconds.items():
            lo, median, hi = quartiles(seconds)
            rows.append({"device": name, "config": cfg.name, "batch": batch, "runner": label,
                         "median_ms": 1e3 * median, "images_per_s": batch / median,
                         "iqr_ms": [1e3 * lo, 1e3 * hi]})

    print("\n| batch | runner | median ms | img/s | peer / polyvit (same precision) |")
    print("|---|---|---|---|---|")
    for row in rows:
        precision = row["runner"].split()[-1]
        mine = next((r for r in rows if r["batch"] == row["batch"]
                     and r["runner"] == f"polyvit cuda {precision}"), None)
        ratio = None if mine is None else row["median_ms"] / mine["median_ms"]
        row["ratio_vs_polyvit"] = ratio
        shown = "—" if row is mine or ratio is None else f"{ratio:.2f}x"
        print(f"| {row['batch']} | {row['runner']} | {row['median_ms']:.3f} | "
              f"{row['images_per_s']:.0f} | {shown} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
