"""The CUDA backend against PyTorch on the same GPU, same weights, same process.

    python benchmarks/cuda_vs_torch.py                       # ViT-S/32, batch 1 32 256 1024
    python benchmarks/cuda_vs_torch.py --batches 1 --compile reduce-overhead --json out.json

Runners, timed in interleaved rounds (each round calls every runner once), median reported:
  polyvit cuda fp32 / bf16   the backend, one CUDA graph per batch size, device input and output
  torch eager fp32           F.linear / F.layer_norm / SDPA in fp32 (TF32 off: true fp32)
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
import statistics
import sys
import time
from typing import Callable

import numpy as np


def torch_vit(cfg, weights, device):
    """The ViT as a torch module, efficient eager style (conv patch embedding, SDPA), on device."""
    import torch
    import torch.nn.functional as F

    class TorchViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for key, value in weights.items():  # buffers: no autograd, moved and compiled as state
                self.register_buffer(key.replace(".", "__"), torch.from_numpy(value).to(device))

        def w(self, key):
            return getattr(self, key.replace(".", "__"), None)

        def forward(self, images):
            d, heads, eps = cfg.embed_dim, cfg.num_heads, cfg.ln_eps
            b = images.shape[0]
            if cfg.patch_norm_pre:
                from polyvit.reference import patchify

                x = F.layer_norm(patchify(images, cfg.patch_size), (cfg.patch_dim,),
                                 self.w("patch_embed.norm_pre.weight"), self.w("patch_embed.norm_pre.bias"), eps)
                x = F.linear(x, self.w("patch_embed.proj.weight").reshape(d, -1), self.w("patch_embed.proj.bias"))
            else:
                x = F.conv2d(images, self.w("patch_embed.proj.weight"), self.w("patch_embed.proj.bias"),
                             stride=cfg.patch_size).flatten(2).transpose(1, 2)
            if cfg.patch_norm_post:
                x = F.layer_norm(x, (d,), self.w("patch_embed.norm.weight"), self.w("patch_embed.norm.bias"), eps)
            x = torch.cat([self.w("cls_token").expand(b, 1, d).to(x.dtype), x], dim=1) + self.w("pos_embed")
            t = x.shape[1]
            for i in range(cfg.depth):
                p = f"blocks.{i}."
                h = F.layer_norm(x, (d,), self.w(p + "norm1.weight"), self.w(p + "norm1.bias"), eps)
                qkv = F.linear(h, self.w(p + "attn.qkv.weight"), self.w(p + "attn.qkv.bias"))
                q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
                a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
                x = x + F.linear(a, self.w(p + "attn.proj.weight"), self.w(p + "attn.proj.bias"))
                h = F.layer_norm(x, (d,), self.w(p + "norm2.weight"), self.w(p + "norm2.bias"), eps)
                h = F.gelu(F.linear(h, self.w(p + "mlp.fc1.weight"), self.w(p + "mlp.fc1.bias")),
                           approximate="none" if cfg.gelu == "erf" else "tanh")
                x = x + F.linear(h, self.w(p + "mlp.fc2.weight"), self.w(p + "mlp.fc2.bias"))
            cls = F.layer_norm(x[:, 0], (d,), self.w("norm.weight"), self.w("norm.bias"), eps)
            return F.linear(cls, self.w("head.weight"), self.w("head.bias"))

    return TorchViT().eval()


def median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


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

    import torch

    import polyvit
    from polyvit.backends.cuda_backend import CudaBackend
    from polyvit.config import get_config
    from polyvit.parity import random_images
    from polyvit.weights import random_weights

    ok, reason = CudaBackend.availability()
    if not ok or not torch.cuda.is_available():
        print(f"needs a GPU with the cuda backend and a CUDA build of torch: "
              f"{reason or 'torch.cuda.is_available() is False'}", file=sys.stderr)
        return 2
    from polyvit._cuda import DeviceArray

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 peer computes in fp32, as we do
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda:0")
    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    ours = {p: CudaBackend(cfg, weights, p) for p in args.precisions}
    eager = torch_vit(cfg, weights, device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def torch_runner(model, precision):
        def run(x):
            with torch.inference_mode():
                if precision == "fp32":
                    y = model(x)
                else:
                    with torch.autocast("cuda", dtype=dtypes[precision]):
                        y = model(x)
            torch.cuda.synchronize()
            return y
        return run

    compiled = {mode: torch.compile(eager, mode=mode, dynamic=False)
                for mode in args.compile if mode != "none"}
    name = torch.cuda.get_device_name(device)
    print(f"# {cfg.name} on {name}, torch {torch.__version__}, polyvit {polyvit.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    rows = []
    for batch in args.batches:
        images = random_images(cfg, batch, seed=batch)
        x = torch.from_numpy(images).to(device)
        runners: dict[str, Callable] = {}
        for p in args.precisions:
            runners[f"polyvit cuda {p}"] = lambda x, m=ours[p]: m.run(x, output="device")
            runners[f"torch eager {p}"] = torch_runner(eager, p)
            for mode, model in compiled.items():
                runners[f"torch.compile {mode} {p}"] = torch_runner(model, p)
        # Agreement first: the peers must compute the same function.
        reference = runners["torch eager fp32"](x).float().cpu().numpy() if "fp32" in args.precisions else None
        for label, run in runners.items():
            for _ in range(max(1, args.warmup)):  # includes torch.compile's compilation
                out = run(x)
            if reference is not None:
                got = out.numpy() if isinstance(out, DeviceArray) else out.float().cpu().numpy()
                print(f"  batch {batch:5d} {label:40s} max|d| vs torch eager fp32 {np.max(np.abs(got - reference)):.3g}")
        samples = {label: [] for label in runners}
        for _ in range(args.rounds):
            for label, run in runners.items():
                start = time.perf_counter()
                run(x)
                samples[label].append(time.perf_counter() - start)
        for label in runners:
            ms = median_ms(samples[label])
            rows.append({"device": name, "config": cfg.name, "batch": batch, "runner": label,
                         "median_ms": ms, "images_per_s": batch / ms * 1e3,
                         "spread_ms": [1e3 * min(samples[label]), 1e3 * max(samples[label])]})

    print("\n| batch | runner | median ms | img/s | peer / polyvit (same precision) |")
    print("|---|---|---|---|---|")
    for row in rows:
        precision = row["runner"].split()[-1]
        mine = next(r for r in rows if r["batch"] == row["batch"] and r["runner"] == f"polyvit cuda {precision}")
        ratio = row["median_ms"] / mine["median_ms"]
        row["ratio_vs_polyvit"] = ratio
        print(f"| {row['batch']} | {row['runner']} | {row['median_ms']:.3f} | {row['images_per_s']:.0f} | "
              f"{'—' if row is mine else f'{ratio:.2f}x'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
