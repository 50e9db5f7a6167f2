"""The parity rule of the design guide, shared by the tests, vit-run and vit-bench.

A backend's fp32 logits pass when  max|backend - oracle| <= 2 * max|torch_fp32 - oracle| + floor
and its top-5 agree with the oracle's, where the oracle is the reference run in float64 on the
same weights and inputs. The bound is derived from how far an honest fp32 implementation (torch)
lands from the exact answer, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The floor keeps the bound from vanishing when torch happens to land almost exactly on the
# oracle: a few units in the last place (2^-23 relative) of the largest oracle value.
FLOOR_ULPS = 16
FP32_EPS = float(np.finfo(np.float32).eps)


def tolerance(torch_fp32: np.ndarray, oracle: np.ndarray) -> float:
    """The bound a backend's max abs error must stay under, for these outputs."""
    torch_err = float(np.max(np.abs(torch_fp32.astype(np.float64) - oracle)))
    floor = FLOOR_ULPS * FP32_EPS * max(1.0, float(np.max(np.abs(oracle))))
    return 2.0 * torch_err + floor


def topk_agrees(candidate: np.ndarray, oracle: np.ndarray, k: int, tol: float) -> np.ndarray:
    """Per row: is the candidate's top-k the oracle's top-k, in order?

    Two classes whose oracle logits lie within 2*tol of each other may legitimately swap, so
    position j passes when the oracle logit of the candidate's j-th class is within 2*tol of the
    oracle's j-th largest logit; otherwise the class must be exactly the oracle's.
    """
    k = min(k, oracle.shape[-1])
    cand_top = np.argsort(-candidate, axis=-1, kind="stable")[:, :k]
    oracle_sorted = -np.sort(-oracle, axis=-1)[:, :k]
    picked = np.take_along_axis(oracle, cand_top, axis=-1)
    return np.all(np.abs(picked - oracle_sorted) <= 2 * tol, axis=-1)


@dataclass(frozen=True)
class ParityResult:
    max_abs_error: float
    tolerance: float
    topk_ok: bool
    top1_agreement: float  # fraction of rows whose argmax equals the oracle's

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance and self.topk_ok

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (f"{verdict}: max|d| {self.max_abs_error:.3g} (bound {self.tolerance:.3g}), "
                f"top-5 {'agrees' if self.topk_ok else 'differs'}, "
                f"top-1 {100 * self.top1_agreement:.1f}%")


def compare(candidate: np.ndarray, oracle: np.ndarray, tol: float, k: int = 5) -> ParityResult:
    candidate = np.asarray(candidate, dtype=np.float64)
    oracle = np.asarray(oracle, dtype=np.float64)
    if candidate.shape != oracle.shape:
        raise ValueError(f"shapes differ: candidate {candidate.shape}, oracle {oracle.shape}")
    err = float(np.max(np.abs(candidate - oracle)))
    topk = bool(np.all(topk_agrees(candidate, oracle, k, tol))) if candidate.ndim == 2 else True
    top1 = float(np.mean(np.argmax(candidate, -1) == np.argmax(oracle, -1))) \
        if candidate.ndim == 2 else 1.0
    return ParityResult(err, tol, topk, top1)


@dataclass(frozen=True)
class Agreement:
    """How a reduced-precision run agrees with fp32 logits of the same inputs."""
    cosine: np.ndarray       # (B,) cosine similarity of each image's logits
    top1: np.ndarray         # (B,) bool: same top-1 class
    clear: np.ndarray        # (B,) bool: fp32's top-1 leads its runner-up by a clear margin

    def summary(self, label: str) -> str:
        return (f"{label}: cosine min {self.cosine.min():.7f} mean {self.cosine.mean():.7f}, "
                f"top-1 {self.top1.mean():.1%} overall, {self.top1[self.clear].mean():.1%} of "
                f"{self.clear.sum()} clear leads")


def agreement(candidate: np.ndarray, fp32: np.ndarray, error_std: float) -> Agreement:
    """Compare (B, classes) logits with fp32's. A lead is clear when the gap between fp32's top
    two logits, in units of the logits' spread, exceeds 4 error_std (the candidate's expected
    error in the same units): only a real defect flips such a top-1."""
    out, ref = candidate.astype(np.float64), fp32.astype(np.float64)
    cosine = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    top = np.sort(ref, axis=1)
    lead = (top[:, -1] - top[:, -2]) / ref.std(axis=1)
    return Agreement(cosine, out.argmax(1) == ref.argmax(1), lead > 4 * error_std)


def random_images(cfg, batch: int, seed: int = 0) -> np.ndarray:
    """(B, C, H, W) float32 uniform in [-1, 1]: the range of images normalised with mean = std
    = 0.5, which most checkpoints use."""
    rng = np.random.default_rng(seed)
    shape = (batch, cfg.in_chans, cfg.image_size, cfg.image_size)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def reference_outputs(cfg, weights, images: np.ndarray) -> tuple[np.ndarray, float]:
    """(float64 oracle logits, tolerance) of the torch reference on these weights and images."""
    from .backends.torch_backend import TorchBackend

    oracle = TorchBackend(cfg, weights, "fp64").logits(images)
    torch32 = TorchBackend(cfg, weights, "fp32").forward(images)
    return oracle, tolerance(torch32, oracle)
