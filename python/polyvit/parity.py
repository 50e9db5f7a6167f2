"""The parity rule of the design guide, shared by the tests, vit-run and vit-bench.

A backend's fp32 logits pass when  max|backend - oracle| <= 2 * max|torch_fp32 - oracle| + floor
and its top-5 agree with the oracle's, where the oracle is the reference run in float64 on the
same weights and inputs. The bound is derived from how far an honest fp32 implementation (torch)
lands from the exact answer, not guessed.

Reduced precisions (bf16, fp16, int8) have one rule for every backend: op by op, an element-wise
bound derived from the inputs and the precision's rounding (reduced_op_bound); end to end, a
cosine and top-1 budget against fp32 logits (REDUCED, agreement).
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


# ---- reduced precisions ----------------------------------------------------------------------------
#
# One rule for bf16, fp16 and int8, for every backend. A backend may round an op's inputs to the
# precision (weights, activations or both), compute with fp32 accumulation, and round what it
# stores; the op-level bound below is what those roundings can do at most, derived from the
# inputs (first order in the unit roundoff u), so it holds for every backend that rounds no
# more than that, and a layout, padding or tail bug (an error of the size of the values
# themselves) lies far above it. End to end, 12 blocks compound the op errors in ways a bound
# cannot follow usefully: there the logits are judged against fp32 by cosine similarity and
# top-1 agreement, with the thresholds of REDUCED, measured and justified below.

# Unit roundoff of round-to-nearest: bf16 keeps 8 significant bits, fp16 11, fp32 24. TF32 keeps
# fp16's 11 bits, but tensor cores may truncate an fp32 operand to them rather than round it:
# twice the unit roundoff, 2^-10.
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "tf32": 2.0 ** -10}
# int8: weights symmetric per output channel (step max|w| / 127), activations asymmetric u8 per
# token (step (max(x, 0) - min(x, 0)) / 255); rounding moves a value by half a step.
INT8_WEIGHT_LEVELS, UINT8_ACTIVATION_LEVELS = 127, 255
GELU_MAX_SLOPE = 1.13  # max |gelu'(x)| = 1.1289 (erf form; the tanh form's is within 0.1%)


def _abs64(a) -> np.ndarray:
    return np.abs(np.asarray(a, np.float64))


def linear_input_error(precision: str, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(M, N): the most rounding x (M, K) and weight (N, K) to `precision` can move x @ w.T."""
    ax, aw = _abs64(x), _abs64(weight)
    if precision == "int8":
        dw = aw.max(1) / INT8_WEIGHT_LEVELS / 2                                    # (N,)
        x64 = np.asarray(x, np.float64)
        dx = (np.maximum(x64.max(1), 0) - np.minimum(x64.min(1), 0)) \
            / UINT8_ACTIVATION_LEVELS / 2                                           # (M,)
        return ax.sum(1, keepdims=True) * dw + dx[:, None] * aw.sum(1) \
            + x.shape[1] * dx[:, None] * dw
    u = UNIT_ROUNDOFF[precision]
    return (2 * u + u * u) * (ax @ aw.T)


def reduced_op_bound(op: str, precision: str, args: tuple, oracle: np.ndarray) -> np.ndarray:
    """The element-wise error bound of `op` in `precision` (bf16, fp16, int8) on these inputs,
    against the float64 oracle of the unrounded inputs; fp32 accumulation error is covered by
    adding the fp32 rule's tolerance (see the op tests). args are the op's positional args."""
    u = UNIT_ROUNDOFF.get(precision, UNIT_ROUNDOFF["bf16"])  # int8 keeps 16-bit intermediates
    out = u * _abs64(oracle)                                 # the result stored once rounded
    if op == "linear":
        x, weight, _, epilogue = args[:4]
        slope = GELU_MAX_SLOPE if epilogue.startswith("gelu") else 1.0
        return out + slope * linear_input_error(precision, x, weight)
    if op == "patch_embed":
        images, weight = args[:2]
        b, c, h, w = images.shape
        p = weight.shape[-1]
        patches = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5) \
            .reshape(-1, c * p * p)
        err = linear_input_error(precision, patches, weight.reshape(weight.shape[0], -1))
        return out + err.reshape(oracle.shape)
    if op == "layernorm":
        # rounding x moves (x - mean) / std by at most ~2u max|x| / std per row, scaled by |w|
        # (a constant row normalises to exactly 0 however x is rounded: no term there)
        x, weight = np.asarray(args[0], np.float64), _abs64(args[1])
        std = x.std(1, keepdims=True)
        spread = np.divide(np.abs(x).max(1, keepdims=True), std, out=np.zeros_like(std),
                           where=std > 0)
        return out + 2 * u * spread * weight
    if op == "bias_gelu":
        x, bias = np.asarray(args[0], np.float64), np.asarray(args[1], np.float64)
        return out + GELU_MAX_SLOPE * u * np.abs(x + bias)
    if op == "attention":
        # rounding q and k moves each score by at most 2u |q||k| / sqrt(hd); a softmax whose
        # scores all move by at most e moves each probability p by at most p (e^2e - 1); rounding
        # v and the probabilities adds 2u of max|v|
        qkv, heads = np.asarray(args[0], np.float64), int(args[1])
        b, t, three_d = qkv.shape
        d = three_d // 3
        hd = d // heads
        q, k, v = np.abs(qkv.reshape(b, t, 3, heads, hd)).transpose(2, 0, 3, 1, 4)  # (B, H, T, hd)
        e = 2 * u * (q @ k.transpose(0, 1, 3, 2)).max(-1) / np.sqrt(hd)             # (B, H, T)
        vmax = v.max(axis=(2, 3))[:, :, None]                                        # (B, H, 1)
        err = (np.expm1(2 * e) + 2 * u) * vmax                                       # (B, H, T)
        return out + np.repeat(err.transpose(0, 2, 1), hd, axis=2)
    raise ValueError(f"unknown op {op!r}")


@dataclass(frozen=True)
class Budget:
    """What a reduced precision must keep of fp32's logits, over many images."""
    cosine: float     # min cosine similarity of an image's logits with fp32's
    error_std: float  # the logit error the cosine bound allows, in units of the logits' spread


# Thresholds (measured on ViT-S/32, ViT-Ti/16, the seed architecture and an odd-sized config,
# seeds 1 and 2, 64 images each, 2026-11, on the cpp and sycl backends):
#   bf16 (8 significant bits per operand, rounding 2^-9): the logits move by ~0.6% (relative
#   L2) across 12 blocks; cosine = 1 - rel^2 / 2. Bound 0.9995, i.e. <= 3% relative error: 5x
#   the measured error, while a real bug (a wrong panel, a dropped bias, a bad tail) drops the
#   cosine far below 0.99. fp16 weights (3 more bits): <= 0.08% measured; bound 0.99999
#   (<= 0.45%, about 6x). int8 rounds weights to 1/254 of each channel's range and activations
#   to 1/255 of each token's range: ~2.5% relative logit error measured; bound 0.995 (<= 10%).
#   tf32 (fp32 values, GEMM operands with fp16's 11 bits, everything else fp32) has fp16's budget
#   (not yet measured on a GPU).
REDUCED = {"bf16": Budget(0.9995, 0.03), "fp16": Budget(0.99999, 0.005),
           "int8": Budget(0.995, 0.1), "tf32": Budget(0.99999, 0.005)}
# Top-1: seeded random weights give nearly flat logits (14-41% of images have a top-1 lead below
# 0.1 logit std, where trained checkpoints are peaked), so a flip there says nothing about the
# kernels. The top-1 must agree on every image whose fp32 lead exceeds 4x the allowed error
# (error_std), and on at least this share of all images (measured: bf16 97-100%, fp16 98-100%,
# int8 92-100%).
TOP1_OVERALL = 0.90


@dataclass(frozen=True)
class Agreement:
    """How a reduced-precision run agrees with fp32 logits of the same inputs."""
    cosine: np.ndarray       # (B,) cosine similarity of each image's logits
    top1: np.ndarray         # (B,) bool: same top-1 class
    clear: np.ndarray        # (B,) bool: fp32's top-1 leads its runner-up by a clear margin

    def passes(self, budget: Budget) -> bool:
        return bool(self.cosine.min() >= budget.cosine and self.top1[self.clear].all()
                    and self.top1.mean() >= TOP1_OVERALL)

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
