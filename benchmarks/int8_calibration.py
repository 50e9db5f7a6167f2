"""Static (calibrated) int8 activation scales against cpp's per-token dynamic ones: agreement.

    .venv/bin/python benchmarks/int8_calibration.py [--images 64] [--calibration 32]

cpp int8 quantises each linear's input per token at run time (asymmetric u8, the range of the
row, always including 0). A static scheme fixes one range per linear from calibration inputs
and skips the range pass. This script answers "does calibration pay?" for agreement with fp32,
by simulating each scheme exactly in the float64 reference forward (reference.py's `linear`
replaced by a fake-quantised one: s8 weights per output channel, u8 activations, int products
summed exactly, one fp32-like scale per output; LayerNorm, attention, GELU, residuals and the
head in float64, as cpp keeps them fp32):

- dynamic: per token, the row's [min, max] (what cpp int8 does; checked against cpp itself);
- static min/max: per linear, the [min, max] over the calibration images;
- static percentile: per linear, the 0.01 % / 99.99 % quantiles over the calibration images
  (clipping the rare outliers, as post-training quantisers such as NNCF do).

Each is compared with the float64 forward on `--images` inputs other than the calibration ones
(parity.agreement: cosine of the logits, top-1 on clear leads), on two models: the trained
digits model in the repo on real digits test images, and ViT-S/32 with seeded weights on
vit-bench's random images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

import polyvit
from polyvit import parity, reference
from polyvit.datasets import open_dataset
from polyvit.preprocessing import preprocess
from polyvit.weights import load as load_weights, random_weights

ROOT = Path(__file__).resolve().parent.parent
BLOCK_LINEARS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def quantise_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) -> s8 values (as float64) and the per-output scale max|w| / 127."""
    scale = w.abs().amax(dim=1).clamp_min(1e-30) / 127
    return torch.round(w / scale[:, None]).clamp(-127, 127), scale


def quantise_u8(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Asymmetric u8 over [lo, hi] (widened to include 0): (q - zero) * scale approximates x."""
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / 255).clamp_min(1e-30)
    zero = torch.round(-lo / scale)
    q = torch.round(x / scale + zero).clamp(0, 255)
    return q, zero, scale


class FakeInt8:
    """reference.linear, fake-quantised for the block linears of the weights `w`."""

    def __init__(self, w: dict[str, torch.Tensor], mode: str,
                 ranges: dict[int, tuple[float, float]] | None = None) -> None:
        self.mode, self.ranges, self.calls = mode, ranges or {}, 0
        self.quantised = {}
        for name, t in w.items():
            if name.endswith(".weight") and any(k in name for k in BLOCK_LINEARS):
                self.quantised[id(t)] = quantise_weight(t)
        self.seen: dict[int, list[torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
        if id(weight) not in self.quantised:  # the head and the patch embedding stay exact
            return x @ weight.T + (0 if bias is None else bias)
        k = self.calls
        self.calls += 1
        if self.mode == "record":
            self.seen.setdefault(k, []).append(x.detach().reshape(-1))
            return x @ weight.T + (0 if bias is None else bias)
        qw, sw = self.quantised[id(weight)]
        if self.mode == "dynamic":
            lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        else:
            lo, hi = (torch.tensor(v, dtype=x.dtype) for v in self.ranges[k])
        q, zero, sa = quantise_u8(x, lo, hi)
        acc = (q - zero) @ qw.T  # exact: integers well inside float64's 53 bits
        y = acc * (sa * sw)
        return y if bias is None else y + bias

    def start(self) -> None:
        self.calls = 0


def run(cfg, w, images: np.ndarray, fake: FakeInt8 | None) -> np.ndarray:
    saved = reference.linear
    if fake is not None:
        reference.linear = fake
        fake.start()
    try:
        with torch.no_grad():
            return reference.forward(cfg, w, torch.from_numpy(images).double()).numpy()
    finally:
        reference.linear = saved


def calibrated_ranges(cfg, w, calibration: np.ndarray, quantile: float | None
                      ) -> dict[int, tuple[float, float]]:
    recorder = FakeInt8(w, "record")
    for image in calibration:  # one image a call: call k is the same linear every time
        run(cfg, w, image[None], recorder)
    ranges = {}
    for k, xs in recorder.seen.items():
        values = torch.cat(xs)
        if quantile is None:
            ranges[k] = (float(values.min()), float(values.max()))
        else:
            sample = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(k))
                            [:2_000_000]]
            ranges[k] = (float(torch.quantile(sample, quantile)),
                         float(torch.quantile(sample, 1 - quantile)))
    return ranges


def study(name: str, cfg, weights: dict[str, np.ndarray], calibration: np.ndarray,
          images: np.ndarray, cpp_int8: np.ndarray | None
          ) -> tuple[list[str], dict[str, parity.Agreement]]:
    """Table rows, and each scheme's agreement with the float64 forward (cpp's as "cpp")."""
    w = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in weights.items()}
    exact = run(cfg, w, images, None)
    budget = parity.REDUCED["int8"]
    rows = []
    schemes = [("dynamic per token (cpp's)", FakeInt8(w, "dynamic")),
               ("static min/max", FakeInt8(w, "static", calibrated_ranges(cfg, w, calibration, None))),
               ("static 0.01 % quantiles",
                FakeInt8(w, "static", calibrated_ranges(cfg, w, calibration, 1e-4)))]
    simulated, found = {}, {}
    for label, fake in schemes:
        out = run(cfg, w, images, fake)
        simulated[label] = out
        a = found[label] = parity.agreement(out, exact, budget.error_std)
        rows.append(f"| {name} | {label} | {a.cosine.min():.5f} | {np.median(a.cosine):.6f} | "
                    f"{a.top1.mean():.1%} | {a.top1[a.clear].mean():.1%} of {a.clear.sum()} |")
    if cpp_int8 is not None:
        dyn = simulated["dynamic per token (cpp's)"]
        a = found["cpp"] = parity.agreement(cpp_int8, exact, budget.error_std)
        rows.append(f"| {name} | cpp int8 itself | {a.cosine.min():.5f} | "
                    f"{np.median(a.cosine):.6f} | {a.top1.mean():.1%} | "
                    f"{a.top1[a.clear].mean():.1%} of {a.clear.sum()} |")
        print(f"{name}: simulated dynamic vs cpp int8, max |logit difference| "
              f"{np.abs(dyn - cpp_int8).max():.3g} (logit spread {exact.std():.3g})",
              file=sys.stderr)
    return rows, found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64, help="inputs compared (default 64)")
    p.add_argument("--calibration", type=int, default=32, help="calibration inputs (default 32)")
    p.add_argument("--models", nargs="+", choices=("digits", "vit_s32"),
                   default=["digits", "vit_s32"])
    args = p.parse_args(argv)
    rows = ["| model | activation scales | cosine min | cosine median | top-1 | top-1 on clear leads |",
            "|---|---|---:|---:|---:|---:|"]
    cpp = polyvit.backends.available_backends()["cpp"][0]
    if "digits" in args.models:
        digits_path = ROOT / "weights" / "vit_digits.safetensors"
        cfg, weights = load_weights(digits_path)
        train, test = open_dataset("digits", "train"), open_dataset("digits", "test")
        calibration = np.stack([preprocess(x, cfg) for x in train.items[:args.calibration]])
        images = np.stack([preprocess(x, cfg) for x in test.items[:args.images]])
        out = polyvit.load(digits_path, backend="cpp", precision="int8")(images) if cpp else None
        rows += study("digits (trained, real images)", cfg, weights, calibration, images, out)[0]
    if "vit_s32" in args.models:
        cfg = polyvit.config.get_config("vit_small_patch32_224")
        weights = random_weights(cfg, seed=0)
        calibration = parity.random_images(cfg, args.calibration, seed=1032)
        images = parity.random_images(cfg, args.images, seed=7)
        out = polyvit.load(weights, config=cfg, backend="cpp", precision="int8")(images) \
            if cpp else None
        rows += study("ViT-S/32 (seeded, random images)", cfg, weights, calibration, images,
                      out)[0]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
