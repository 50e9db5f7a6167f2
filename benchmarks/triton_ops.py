"""Each Triton kernel against its torch equivalent on one GPU, over a sweep of sizes:
triton.testing.perf_report charts (one PNG and CSV per op) and the figures as JSON.

    python benchmarks/triton_ops.py --out docs/images/triton            # a GPU, fp32
    python benchmarks/triton_ops.py --dtype bf16 --out docs/images/triton
    TRITON_INTERPRET=1 python benchmarks/triton_ops.py --smoke --out /tmp/ops   # runs, measures nothing

Ops and their torch side (shapes of ViT-S/32: D 384, MLP 1536, 50 tokens, 6 heads; the x axis
is the batch, 1 to 1024 images):
  linear_gelu   x @ W.T + b, GELU (fc1)          torch: F.gelu(F.linear(x, W, b))       TFLOP/s
  layernorm     LayerNorm over 384                torch: F.layer_norm                    GB/s
  attention     fused softmax(q k^T / 8) v        torch: F.scaled_dot_product_attention  TFLOP/s
  softmax       rows of 50 (one head's scores)    torch: torch.softmax                   GB/s
  add           x + pos, broadcast over images    torch: x + y                           GB/s
  patch_embed   implicit-GEMM patch embedding     torch: F.conv2d(stride=32) + flatten   TFLOP/s
Timed by triton.testing.do_bench (median); the charts need pandas and matplotlib, and without
them the figures still go to ops.json (draw the charts later with --plot ops.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time

D, MLP, TOKENS, HEADS, PATCH, IMAGE = 384, 1536, 50, 6, 32, 224
BATCHES = [1, 8, 32, 128, 256, 512, 1024]
SMOKE_BATCHES = [1, 2]
UNITS = {"linear_gelu": "TFLOP/s", "layernorm": "GB/s", "attention": "TFLOP/s",
         "softmax": "GB/s", "add": "GB/s", "patch_embed": "TFLOP/s"}


def cases(op: str, batch: int, dtype, device):
    """(triton callable, torch callable, work: flops or bytes of one call) for one batch."""
    import torch
    import torch.nn.functional as F

    from polyvit.backends.triton import (add, attention, layernorm, linear, patch_embed,
                                         softmax)

    g = torch.Generator(device="cpu").manual_seed(batch)

    def rand(*shape, dt=dtype):
        return torch.randn(shape, generator=g).to(device=device, dtype=dt)

    m = batch * TOKENS
    if op == "linear_gelu":
        x, w, b = rand(m, D), rand(MLP, D) / math.sqrt(D), rand(MLP, dt=torch.float32)
        return (lambda: linear.linear(x, w, b, "gelu_erf", out_dtype=dtype),
                lambda: F.gelu(F.linear(x, w, b.to(dtype))), 2 * m * D * MLP)
    if op == "layernorm":
        x, w, b = rand(m, D, dt=torch.float32), rand(D, dt=torch.float32), rand(D, dt=torch.float32)
        return (lambda: layernorm.layernorm(x, w, b, 1e-6),
                lambda: F.layer_norm(x, (D,), w, b, 1e-6), 2 * m * D * 4)
    if op == "attention":
        qkv = rand(batch, TOKENS, 3 * D)
        hd = D // HEADS

        def torch_attention():
            q, k, v = qkv.reshape(batch, TOKENS, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
            return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, TOKENS, D)
        return (lambda: attention.attention(qkv, HEADS), torch_attention,
                4 * batch * HEADS * TOKENS * TOKENS * hd)
    if op == "softmax":
        x = rand(batch * HEADS * TOKENS, TOKENS, dt=torch.float32)
        return (lambda: softmax.softmax(x), lambda: torch.softmax(x, dim=1), 2 * x.numel() * 4)
    if op == "add":
        x, y = rand(batch, TOKENS * D, dt=torch.float32), rand(TOKENS * D, dt=torch.float32)
        return (lambda: add.add(x, y), lambda: x + y, (2 * x.numel() + y.numel()) * 4)
    if op == "patch_embed":
        images = rand(batch, 3, IMAGE, IMAGE, dt=torch.float32)
        w = rand(D, 3, PATCH, PATCH) / math.sqrt(3 * PATCH * PATCH)
        b = rand(D, dt=torch.float32)
        w2 = w.reshape(D, -1).contiguous()
        n = (IMAGE // PATCH) ** 2

        def torch_patch_embed():
            return F.conv2d(images.to(dtype), w, b.to(dtype), stride=PATCH).flatten(2).transpose(1, 2)
        return (lambda: patch_embed.patch_embed(images, w2, b, PATCH), torch_patch_embed,
                2 * batch * n * 3 * PATCH * PATCH * D)
    raise ValueError(op)


def timer(smoke: bool):
    """seconds of one call: do_bench's median on a GPU; one wall-clock call with --smoke."""
    if smoke:
        def wall(fn):
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        return wall
    import triton

    return lambda fn: triton.testing.do_bench(fn, return_mode="median") / 1e3


def measure(op: str, batches, dtype, device, seconds_of) -> list[dict]:
    rows = []
    for batch in batches:
        ours, theirs, work = cases(op, batch, dtype, device)
        # the same function first: a fast wrong kernel measures nothing
        diff = (ours().float() - theirs().float()).abs().max().item()
        for provider, fn in (("triton", ours), ("torch", theirs)):
            s = seconds_of(fn)
            rows.append({"op": op, "batch": batch, "provider": provider, "ms": 1e3 * s,
                         "value": work / s / (1e12 if UNITS[op] == "TFLOP/s" else 1e9),
                         "unit": UNITS[op], "max_abs_diff": diff})
    return rows


def charts(rows: list[dict], out: str, dtype_name: str) -> list[str]:
    """One perf_report chart per op from measured rows (needs pandas and matplotlib)."""
    import triton

    written = []
    for op in dict.fromkeys(r["op"] for r in rows):
        mine = [r for r in rows if r["op"] == op]
        table = {(r["batch"], r["provider"]): r["value"] for r in mine}
        bench = triton.testing.Benchmark(
            x_names=["batch"], x_vals=sorted({r["batch"] for r in mine}), x_log=True,
            line_arg="provider", line_vals=["triton", "torch"], line_names=["Triton", "Torch"],
            styles=[("blue", "-"), ("green", "-")], ylabel=UNITS[op],
            plot_name=f"{op}-{dtype_name}", args={})
        triton.testing.perf_report(bench)(
            lambda batch, provider: table[(batch, provider)]).run(save_path=out, print_data=False)
        written.append(os.path.join(out, f"{op}-{dtype_name}.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/images/triton", help="folder for PNGs, CSVs, ops.json")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="operands of the GEMM-like ops (fp32: IEEE products on both sides)")
    parser.add_argument("--ops", nargs="+", default=list(UNITS), choices=list(UNITS))
    parser.add_argument("--smoke", action="store_true",
                        help="batches 1 and 2, one wall-clock call each: checks the script runs "
                             "(under TRITON_INTERPRET=1 on a CPU); the figures mean nothing")
    parser.add_argument("--plot", metavar="OPS_JSON", help="only draw the charts of a JSON "
                                                           "written earlier (e.g. on a GPU "
                                                           "machine without matplotlib)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.plot:
        with open(args.plot) as f:
            saved = json.load(f)
        print("\n".join(charts(saved["rows"], args.out, saved["dtype"])))
        return 0

    import torch

    import polyvit

    ok, why = polyvit.available_backends()["triton"]
    if not ok:
        print(f"triton_ops.py: the triton backend is not available here: {why}", file=sys.stderr)
        return 2
    if not args.smoke and not torch.cuda.is_available():
        print("triton_ops.py: needs a CUDA GPU (or --smoke under TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's fp32 side computes in fp32 too
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    seconds_of = timer(args.smoke)
    rows = []
    with torch.inference_mode():
        for op in args.ops:
            rows += measure(op, SMOKE_BATCHES if args.smoke else BATCHES, dtype, device, seconds_of)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (interpreter)"
    path = os.path.join(args.out, "ops.json")
    with open(path, "w") as f:
        json.dump({"device": where, "dtype": args.dtype, "smoke": args.smoke, "rows": rows,
                   "date": time.strftime("%Y-%m-%d")}, f, indent=1)
    print("| op | batch | triton | torch | unit | triton / torch | max\\|Δ\\| |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        if r["provider"] == "triton":
            peer = next(p for p in rows if p["op"] == r["op"] and p["batch"] == r["batch"]
                        and p["provider"] == "torch")
            print(f"| {r['op']} | {r['batch']} | {r['value']:.3g} | {peer['value']:.3g} | "
                  f"{r['unit']} | {r['value'] / peer['value']:.2f}x | {r['max_abs_diff']:.2g} |")
    if all(importlib.util.find_spec(m) for m in ("pandas", "matplotlib")):
        print("\n".join(charts(rows, args.out, args.dtype)))
    else:
        print(f"charts: pandas or matplotlib is missing here; run --plot {path} where they are")
    return 0


if __name__ == "__main__":
    sys.exit(main())
