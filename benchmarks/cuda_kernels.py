"""Each kernel of the CUDA backend against its torch counterpart, on the same GPU, same shapes,
same process: CUDA-event time per launch, median of interleaved rounds.

    python benchmarks/cuda_kernels.py                  # ViT-S/32 shapes at batch 32 and 256
    python benchmarks/cuda_kernels.py --batches 1024 --json kernels.json

polyvit's side runs polyvit._cuda.benchmark_op (the kernels of cuda/kernels/, inputs resident on
the device); torch's side runs the op torch would use in eager mode, as the torch peer
(polyvit.bench.torch_peer) does: F.linear + epilogue, F.layer_norm, SDPA on packed qkv, F.gelu.
Each side times itself with CUDA events; polyvit.bench.rounds interleaves and rotates them. The
variants of each kernel (naive to promoted) are compared by the dev programs instead:
make -C cuda/dev && cuda/dev/build/<op>.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def torch_seconds(fn, reps: int, warmup: int) -> float:
    """Median seconds of one launch of fn, between CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times) / 1e3


def cases(cfg, batch: int):
    """(op, dims, precision, epilogue, label): the forward's kernels at this batch size."""
    t, d, m = cfg.num_tokens, cfg.embed_dim, cfg.mlp_dim
    rows = batch * t
    out = []
    for p in ("fp32", "bf16"):
        out += [("linear", [rows, d, 3 * d], p, "none", "qkv"),
                ("linear", [rows, d, d], p, "residual", "proj + residual"),
                ("linear", [rows, d, m], p, "gelu_erf", "fc1 + bias-GELU"),
                ("linear", [rows, m, d], p, "residual", "fc2 + residual"),
                ("layernorm", [rows, d], p, "none", "layernorm"),
                ("attention", [batch, t, d, cfg.num_heads], p, "none", "attention")]
    out.append(("bias_gelu", [rows, m], "fp32", "gelu_erf", "bias-GELU standalone"))
    return out


def torch_op(op, dims, precision, epilogue, device):
    """A closure running torch's counterpart on random device tensors."""
    import torch
    import torch.nn.functional as F

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    randn = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    if op == "linear":
        m, k, n = dims
        x, w, b, r = randn(m, k), randn(n, k), randn(n), randn(m, n)
        if epilogue == "gelu_erf":
            return lambda: F.gelu(F.linear(x, w, b))
        if epilogue == "residual":
            return lambda: r + F.linear(x, w, b)
        return lambda: F.linear(x, w, b)
    if op == "layernorm":
        rows, c = dims
        x = torch.randn(rows, c, device=device)
        w, b = torch.randn(c, device=device), torch.randn(c, device=device)
        return lambda: F.layer_norm(x, (c,), w, b, 1e-6).to(dtype)
    if op == "attention":
        from polyvit.bench.torch_peer import attention

        batch, t, d, h = dims
        qkv = randn(batch, t, 3 * d)
        return lambda: attention(qkv, h)
    rows, n = dims  # bias_gelu
    x, b = randn(rows, n), randn(n)
    return lambda: F.gelu(x + b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="vit_small_patch32_224")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of reps launches")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    from polyvit.bench.peers import gpu_missing

    why = gpu_missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    import torch

    from polyvit import _cuda
    from polyvit.bench.rounds import run_rounds
    from polyvit.config import get_config

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    device = torch.device("cuda:0")
    cfg = get_config(args.config)
    print(f"# kernels of {cfg.name} on {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print("| op | dims | precision | polyvit ms | torch ms | torch / polyvit |")
    print("|---|---|---|---|---|---|")
    rows = []
    for batch in args.batches:
        for op, dims, precision, epilogue, label in cases(cfg, batch):
            peer = torch_op(op, dims, precision, epilogue, device)
            calls = {
                "polyvit": lambda: statistics.median(_cuda.benchmark_op(
                    op, dims, precision, epilogue, warmup=3, reps=args.reps)) / 1e3,
                "torch": lambda: torch_seconds(peer, args.reps, warmup=3)}
            # each call times its own launches: the clock only reads what it returns
            result = run_rounds(calls, args.rounds, clock=lambda call: call())
            if result.errors:
                print(f"| {label} | {dims} | {precision} | could not run: {result.errors} |")
                continue
            ours, theirs = (1e3 * statistics.median(result.seconds[k]) for k in calls)
            rows.append({"op": label, "dims": dims, "precision": precision, "batch": batch,
                         "polyvit_ms": ours, "torch_ms": theirs, "ratio": theirs / ours})
            print(f"| {label} | {dims} | {precision} | {ours:.4f} | {theirs:.4f} | {theirs / ours:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
