"""Training-step benchmark on the CPU: polyvit's TrainableViT against timm-style plain torch code
of the same model, in fp32 and in bf16 autocast, in the same run.

    flock /tmp/polyvit-cpu.lock .venv/bin/python benchmarks/bench_train.py
        [--config vit_small_patch32_224] [--batch 32] [--steps 10] [--warmup 3] [--threads N]
        [--precisions fp32,bf16] [--json out.json] [--smoke]

One step is what a training loop does per batch: forward, cross-entropy loss, backward, AdamW
step, zero_grad; bf16 runs the forward and the loss under torch.autocast("cpu", bf16), the
backward and the optimizer outside it, as a torch training loop does.

Models (all with the same weights, copied from the polyvit model's state dict):

- polyvit: polyvit.training.model.TrainableViT (F.scaled_dot_product_attention);
- timm-style: VisionTransformer written here the way timm writes it (Conv2d patch embedding,
  class token + position embedding, pre-norm blocks of Attention and Mlp, final norm, class-token
  pooling, head), with timm's non-fused attention (q * scale @ k^T, softmax, @ v): the plain
  code, and the reference of the ratio column;
- timm-style SDPA: the same code with timm's fused_attn path (F.scaled_dot_product_attention),
  so the table shows what SDPA is worth on its own.

Before timing, every model computes the loss and gradients of one fp32 batch on the same weights;
the losses must agree to 1e-4 (and the gradients to 1e-3 of their largest magnitude), so the
rows are of the same math. Each model has its own torch.optim.AdamW (fused where this torch
supports it on CPU, the same kind for all) and the same seeded synthetic images and labels. After
--warmup steps per model, the --steps timed steps run in interleaved rounds (one step of each
model and precision per round), so a drift of a shared machine hits every row alike; ms/step is
the median of a row's step times and img/s = batch / median. Also shown: the best step (least
disturbed by other processes) and the paired ratio, the median over rounds of the peer's step
time over the row's in the same round. The load average before and after is printed: on a
shared machine, read the rows against it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from polyvit.config import ViTConfig, get_config
from polyvit.training.model import TrainableViT

PRECISIONS = ("fp32", "bf16")
LOSS_TOL = 1e-4
GRAD_TOL = 1e-3
REFERENCE = "timm-style"


# ---- the peer: timm's VisionTransformer, written out in plain torch ------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)  # NCHW -> NLC
        return self.norm(x)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, fused_attn: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.proj(x)
        return self.proj_drop(x)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, approximate: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate=approximate)
        self.drop1 = nn.Dropout(0.0)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        return self.drop2(self.fc2(self.norm(x)))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, fused_attn: bool) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, fused_attn)
        self.ls1 = nn.Identity()
        self.drop_path1 = nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.mlp = Mlp(dim, cfg.mlp_dim, "tanh" if cfg.gelu == "tanh" else "none")
        self.ls2 = nn.Identity()
        self.drop_path2 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class VisionTransformer(nn.Module):
    """timm's VisionTransformer for the plain ViT layout (class token, no register tokens, no
    patch norms, token pooling), its parameter names included."""

    def __init__(self, cfg: ViTConfig, fused_attn: bool) -> None:
        super().__init__()
        if cfg.patch_norm_pre or cfg.patch_norm_post:
            raise SystemExit(f"config {cfg.name}: the timm-style peer has no patch norms")
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.image_size, cfg.patch_size, cfg.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches + 1, dim) * .02)
        self.pos_drop = nn.Dropout(0.0)
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[Block(cfg, fused_attn) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(dim, eps=cfg.ln_eps)
        self.fc_norm = nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(dim, cfg.num_classes)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        return self.pos_drop(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.norm_pre(x)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0]  # class-token pooling
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---- the measurement -----------------------------------------------------------------------------

def bf16_support() -> tuple[bool, str]:
    """(runnable, reason). Native bf16 (AVX512-BF16 or AMX) runs; without it the row is skipped
    (autocast would emulate bf16 and time the emulation). Where this torch cannot say, a tiny
    autocast matmul decides."""
    native = [getattr(torch.cpu, f, None) for f in ("_is_avx512_bf16_supported",
                                                     "_is_amx_tile_supported")]
    probes = [f for f in native if f is not None]
    if probes:
        if any(f() for f in probes):
            return True, ""
        return False, "this CPU has no native bf16 (neither AVX512-BF16 nor AMX)"
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True, ""
    except RuntimeError as exc:
        return False, f"bf16 autocast does not run here: {exc}"


def make_optimizer(params) -> tuple[torch.optim.Optimizer, str]:
    """AdamW, fused where this torch has a CPU fused kernel, else the foreach path."""
    params = list(params)
    try:
        probe = nn.Parameter(torch.zeros(2))
        probe.grad = torch.zeros(2)
        torch.optim.AdamW([probe], fused=True).step()
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, fused=True), "AdamW(fused)"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05, foreach=True), \
            "AdamW(foreach)"


def train_step(model: nn.Module, opt: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, precision: str) -> float:
    start = time.perf_counter()
    if precision == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
    else:
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def equal_loss_check(models: dict[str, nn.Module], images: torch.Tensor,
                     labels: torch.Tensor) -> dict:
    """One fp32 forward and backward of every model on the same batch and weights: the losses
    agree to LOSS_TOL and the gradients to GRAD_TOL of the largest gradient magnitude."""
    losses, grads = {}, {}
    for name, model in models.items():
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        losses[name] = loss.item()
        grads[name] = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
    ref = grads["polyvit"]
    scale = max(g.abs().max().item() for g in ref.values())
    loss_diff = max(abs(v - losses["polyvit"]) for v in losses.values())
    grad_diff = max((g[k] - ref[k]).abs().max().item() for g in grads.values() for k in ref)
    check = {"checked": True, "losses": losses, "max_abs_loss_diff": loss_diff,
             "loss_tolerance": LOSS_TOL, "max_grad_diff_relative": grad_diff / scale,
             "grad_tolerance_relative": GRAD_TOL}
    if not (loss_diff < LOSS_TOL and grad_diff <= GRAD_TOL * scale):
        raise SystemExit(f"the models do not compute the same math: {check}")
    return check


def table(rows: list[dict], cfg: ViTConfig, args: argparse.Namespace, meta: dict) -> str:
    lines = [f"One training step (forward, cross-entropy, backward, {meta['optimizer']} step, "
             f"zero_grad) of {cfg.name}, batch {args.batch}, {meta['threads']} threads, "
             f"median of {args.steps} steps after {args.warmup} warmup, torch {torch.__version__}:",
             "", "| model | precision | ms/step | best ms | img/s | vs timm-style | paired |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']} | {r['ms_per_step']:.1f} | "
                     f"{min(r['step_ms']):.1f} | {r['img_per_s']:.1f} | "
                     f"{r['ratio_vs_reference']:.2f}x | {r['paired_ratio_vs_reference']:.2f}x |")
    load = meta["loadavg"]
    lines += ["", f"vs timm-style: img/s over timm-style (non-fused attention) at the same "
              f"precision; paired: the median of that ratio round by round. 1-min load average "
              f"{load['before']:.2f} before, {load['after']:.2f} after ({os.cpu_count()} cores). "
              f"Same weights: fp32 losses agree to {meta['equal_loss']['max_abs_loss_diff']:.1e} "
              f"(gradients to {meta['equal_loss']['max_grad_diff_relative']:.1e} relative); "
              f"{meta['params']:,} parameters each."]
    for s in meta["skipped"]:
        lines.append(f"Skipped {s['precision']}: {s['reason']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="vit_small_patch32_224", help="preset name")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row first")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32,bf16")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--smoke", action="store_true",
                   help="a quick check: vit_test config, 2 steps, 1 warmup")
    args = p.parse_args(argv)
    if args.smoke:
        args.config, args.steps, args.warmup = "vit_test", 2, 1
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    bad = sorted(set(precisions) - set(PRECISIONS))
    if bad or not precisions:
        p.error(f"--precisions: choose from {','.join(PRECISIONS)}, got {args.precisions!r}")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--batch and --steps must be positive, --warmup non-negative")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be positive")
        torch.set_num_threads(args.threads)

    cfg = get_config(args.config)
    skipped = []
    if "bf16" in precisions:
        ok, reason = bf16_support()
        if not ok:
            print(f"skipping bf16: {reason}", file=sys.stderr)
            skipped.append({"precision": "bf16", "reason": reason})
            precisions.remove("bf16")

    torch.manual_seed(0)
    polyvit = TrainableViT(cfg)
    state = polyvit.state_dict()
    models: dict[str, nn.Module] = {"polyvit": polyvit}
    for name, fused in ((REFERENCE, False), ("timm-style SDPA", True)):
        peer = VisionTransformer(cfg, fused_attn=fused)
        peer.load_state_dict(state, strict=True)  # same names by construction
        models[name] = peer
    params = {name: count_params(m) for name, m in models.items()}
    assert len(set(params.values())) == 1, f"parameter counts differ: {params}"
    for m in models.values():
        m.train()

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, cfg.in_chans, cfg.image_size, cfg.image_size, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (args.batch,), generator=gen)
    equal = equal_loss_check(models, images, labels)
    print(f"equal-loss check: fp32 losses {equal['losses']}, max |dloss| "
          f"{equal['max_abs_loss_diff']:.2e}", file=sys.stderr)

    load_before = os.getloadavg()[0]
    # one model (own weights and AdamW) per row, all starting from the same weights
    runs = []
    for precision in precisions:
        for name in models:
            if precision == precisions[0]:
                model = models[name]
            else:
                model = (TrainableViT(cfg) if name == "polyvit"
                         else VisionTransformer(cfg, fused_attn=name != REFERENCE))
                model.load_state_dict(state, strict=True)
                model.train()
            opt, opt_name = make_optimizer(model.parameters())
            runs.append({"model": name, "precision": precision, "net": model, "opt": opt,
                         "times": []})
    for r in runs:
        print(f"warming up {r['model']} {r['precision']} ...", file=sys.stderr)
        for _ in range(args.warmup):
            train_step(r["net"], r["opt"], images, labels, r["precision"])
    for step in range(args.steps):
        for r in runs:
            r["times"].append(train_step(r["net"], r["opt"], images, labels, r["precision"]))
        print(f"round {step + 1}/{args.steps}: " + ", ".join(
            f"{r['model']} {r['precision']} {1e3 * r['times'][-1]:.0f} ms" for r in runs),
            file=sys.stderr)

    rows = []
    for r in runs:
        median = statistics.median(r["times"])
        rows.append({"model": r["model"], "precision": r["precision"],
                     "ms_per_step": 1e3 * median, "img_per_s": args.batch / median,
                     "step_ms": [1e3 * t for t in r["times"]]})
    for row in rows:
        ref = next(x for x in rows if x["model"] == REFERENCE and x["precision"] == row["precision"])
        row["ratio_vs_reference"] = row["img_per_s"] / ref["img_per_s"]
        row["paired_ratio_vs_reference"] = statistics.median(
            a / b for a, b in zip(ref["step_ms"], row["step_ms"]))
        assert math.isfinite(row["img_per_s"]) and row["img_per_s"] > 0

    meta = {"optimizer": opt_name, "threads": torch.get_num_threads(), "skipped": skipped,
            "equal_loss": equal, "params": params["polyvit"],
            "loadavg": {"before": load_before, "after": os.getloadavg()[0]}}
    print(table(rows, cfg, args, meta), end="")
    if args.json:
        doc = {"config": cfg.name, "batch": args.batch, "steps": args.steps,
               "warmup": args.warmup, "threads": meta["threads"], "precisions": precisions,
               "optimizer": opt_name, "params": params, "equal_loss": equal, "skipped": skipped,
               "reference": REFERENCE, "torch": torch.__version__, "loadavg": meta["loadavg"],
               "machine": {"cpu": platform.processor() or platform.machine(),
                           "bf16_native": bf16_support()[0]},
               "results": rows}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
