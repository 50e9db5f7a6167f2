"""Training-time data augmentation for Vision Transformers, in plain torch on batched tensors.

Inputs are batches already normalised for the model: x float (B, 3, H, W) = (pixel - mean) / std
with pixels in [0, 1]. Every random draw comes from the torch.Generator passed in, never from a
global RNG, so a run is reproducible and resumes exactly from a saved generator state. Parameters
are drawn on the generator's device (a CPU generator is the intended one) and then moved to the
images' device, so the same code runs on CPU and CUDA tensors without a host sync per step.

The pipeline, in Augmenter's order (timm's):
  1. random_affine: RandomResizedCrop + horizontal flip + rotation, composed into one affine map
     and resampled once (bilinear, F.affine_grid / F.grid_sample, align_corners=False);
  2. colour in pixel space: color_jitter (brightness, contrast, saturation as torchvision's
     ColorJitter) then rand_augment (torchvision's RandAugment op set and magnitudes);
  3. soft_targets: one-hot labels with label smoothing, then mix: mixup or cutmix of the batch with
     its reverse, the targets mixed with the same weight.

Differences from torchvision worth knowing:
  - crop_scale=(1, 1) means "no crop" whatever crop_ratio says (torchvision would center-crop a
    non-square image whose aspect lies outside crop_ratio);
  - rotation samples the source image beyond the crop box where it can, so only points outside
    the whole image take the fill (torchvision's RandomRotation after RandomResizedCrop fills
    everything outside the crop); the fill is pixel value 0 (black), as torchvision's fill=0,
    blended bilinearly at the image's edge as torchvision's rotate does. Without rotation the
    edge pixels replicate (the resample clamps at the border, as a resize does);
  - RandAugment's geometric ops resample bilinearly (torchvision's default is nearest), and
    Equalize works on the image quantised to 256 levels (then exactly torchvision's algorithm),
    so its output is quantised too; Posterize also quantises, as on uint8 images;
  - ColorJitter applies its three ops in one random order per batch, not per image, and has no
    hue term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "AugmentSettings", "Augmenter", "MixParams", "RAND_AUGMENT_OPS", "apply_mix", "color_jitter",
    "mix", "rand_augment", "random_affine", "sample_crop_boxes", "sample_mix", "soft_targets",
]

# torchvision's RandAugment op list, in its order; magnitudes come from 31 bins (M = 0..30)
RAND_AUGMENT_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
                    "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
                    "AutoContrast", "Equalize")
_GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
_MAX_MAGNITUDE = 30  # torchvision's num_magnitude_bins=31
_CROP_TRIES = 10  # torchvision's RandomResizedCrop.get_params
# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------------------------
# validation: each message names the setting, its allowed range and the value given
# --------------------------------------------------------------------------------------------

def _is_real(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _check_prob(name: str, p) -> float:
    if not _is_real(p) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{name} is a probability and must lie in [0, 1], got {p!r}")
    return float(p)


def _check_nonneg(name: str, v, what: str = "") -> float:
    if not _is_real(v) or v < 0:
        raise ConfigError(f"{name} must be a finite number >= 0{what}, got {v!r}")
    return float(v)


def _check_pair(name: str, pair) -> tuple[float, float]:
    try:
        lo, hi = pair
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (low, high), got {pair!r}") from None
    if not (_is_real(lo) and _is_real(hi)) or lo > hi:
        raise ConfigError(f"{name} must be a pair of finite numbers with low <= high, got {pair!r}")
    return float(lo), float(hi)


def _check_crop_scale(scale) -> tuple[float, float]:
    lo, hi = _check_pair("crop_scale", scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"crop_scale is a range of area fractions inside (0, 1], got {scale!r}; "
                          "(1.0, 1.0) turns the crop off")
    return lo, hi


def _check_crop_ratio(ratio) -> tuple[float, float]:
    lo, hi = _check_pair("crop_ratio", ratio)
    if lo <= 0:
        raise ConfigError(f"crop_ratio is a range of aspect ratios (width / height) > 0, "
                          f"got {ratio!r}")
    return lo, hi


def _check_rotate(rotate) -> tuple[float, float]:
    """A number d means uniform in [-d, d] degrees; a pair (lo, hi) means uniform in [lo, hi]."""
    if _is_real(rotate):
        d = float(rotate)
        if not 0.0 <= d <= 180.0:
            raise ConfigError(f"rotate is the largest rotation in degrees and must lie in "
                              f"[0, 180], got {rotate!r}")
        return -d, d
    return _check_pair("rotate", rotate)


def _check_int(name: str, v, lo: int, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (
            hi is not None and v > hi):
        span = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be an integer {span}, got {v!r}")
    return int(v)


def _check_triple(name: str, v, positive: bool = False) -> tuple[float, float, float]:
    try:
        t = tuple(float(a) for a in v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be 3 numbers (one per RGB channel), got {v!r}") from None
    if len(t) != 3 or not all(math.isfinite(a) for a in t) or (positive and min(t) <= 0):
        need = "3 finite numbers > 0" if positive else "3 finite numbers"
        raise ConfigError(f"{name} must be {need} (one per RGB channel), got {v!r}")
    return t  # type: ignore[return-value]


def _check_images(x, channels: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        what = (f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor)
                else f"a {type(x).__name__}")
        raise ValueError(f"augmentation takes a float image batch (B, C, H, W), got {what}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"colour augmentation needs RGB images (B, 3, H, W), got "
                         f"{tuple(x.shape)}")


def _check_gen(gen) -> None:
    if not isinstance(gen, torch.Generator):
        raise TypeError(f"gen must be a torch.Generator (every random draw comes from it), "
                        f"got {type(gen).__name__}")


def _work_dtype(x: Tensor) -> Tensor:
    # half and bfloat16 batches are augmented in float32 (colour maths and histograms need the
    # precision) and cast back by the caller
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentSettings:
    """What Augmenter does; every field's "off" value is noted. Checked at construction."""

    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range; (1, 1) = off
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect range (width / height)
    hflip: float = 0.5  # probability of a horizontal flip
    rotate: float = 0.0  # rotation uniform in [-rotate, rotate] degrees; 0 = off
    color_jitter: float = 0.0  # ColorJitter(b, c, s) strength, all three equal; 0 = off
    randaugment_ops: int = 0  # RandAugment N; 0 = off
    randaugment_magnitude: int = 9  # RandAugment M, of torchvision's 0..30
    mixup_alpha: float = 0.0  # 0 = off
    cutmix_alpha: float = 0.0  # 0 = off
    mix_prob: float = 1.0  # probability a batch is mixed at all (when either alpha > 0)
    switch_prob: float = 0.5  # when both are on: probability of cutmix instead of mixup
    label_smoothing: float = 0.0  # in the soft targets, before mixing

    def __post_init__(self):
        # normalise to float tuples as well as check: a list would make the frozen dataclass
        # unhashable, and an int pair would compare unequal to nothing surprising either way
        set_ = object.__setattr__
        set_(self, "crop_scale", _check_crop_scale(self.crop_scale))
        set_(self, "crop_ratio", _check_crop_ratio(self.crop_ratio))
        set_(self, "hflip", _check_prob("hflip", self.hflip))
        if not _is_real(self.rotate):
            raise ConfigError(f"rotate is the largest rotation in degrees, a number in "
                              f"[0, 180], got {self.rotate!r}")
        set_(self, "rotate", _check_rotate(self.rotate)[1])
        set_(self, "color_jitter", _check_nonneg("color_jitter", self.color_jitter))
        set_(self, "randaugment_ops", _check_int("randaugment_ops", self.randaugment_ops, 0))
        set_(self, "randaugment_magnitude", _check_int(
            "randaugment_magnitude", self.randaugment_magnitude, 0, _MAX_MAGNITUDE))
        set_(self, "mixup_alpha", _check_nonneg("mixup_alpha", self.mixup_alpha, " (0 = off)"))
        set_(self, "cutmix_alpha", _check_nonneg("cutmix_alpha", self.cutmix_alpha, " (0 = off)"))
        set_(self, "mix_prob", _check_prob("mix_prob", self.mix_prob))
        set_(self, "switch_prob", _check_prob("switch_prob", self.switch_prob))
        ls = self.label_smoothing
        if not _is_real(ls) or not 0.0 <= ls < 1.0:
            raise ConfigError(f"label_smoothing must lie in [0, 1), got {ls!r}")
        set_(self, "label_smoothing", float(ls))


# --------------------------------------------------------------------------------------------
# geometry: RandomResizedCrop + flip + rotation as one resample
# --------------------------------------------------------------------------------------------

def sample_crop_boxes(gen: torch.Generator, batch: int, height: int, width: int,
                      scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """torchvision's RandomResizedCrop.get_params for each of `batch` images, vectorised.

    Returns (batch, 4) int64 on gen's device: top, left, crop height, crop width, with the box
    inside the image. Area fraction uniform in scale, aspect log-uniform in ratio, up to 10 tries
    per image; an image whose tries all fail gets torchvision's fallback center crop."""
    scale, ratio = _check_crop_scale(scale), _check_crop_ratio(ratio)
    dev = gen.device
    # all tries drawn at once; the first valid one per image is the one torchvision would take
    u = torch.rand(2, batch, _CROP_TRIES, generator=gen, device=dev, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])
    w = torch.round(torch.sqrt(area * aspect)).long()  # round half to even, as Python's round
    h = torch.round(torch.sqrt(area / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.uint8).argmax(1, keepdim=True)  # argmax returns the first maximum
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = ok.any(1)
    # torchvision's fallback: the largest centered crop whose aspect lies in ratio
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    fw, fh = min(max(fw, 1), width), min(max(fh, 1), height)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    # offsets uniform over the integer positions that keep the box inside (randint(0, H-h+1))
    v = torch.rand(2, batch, generator=gen, device=dev, dtype=torch.float64)
    top = torch.minimum((v[0] * (height - h + 1)).floor().long(), height - h)
    left = torch.minimum((v[1] * (width - w + 1)).floor().long(), width - w)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _rotation_inverse(angle_deg: Tensor) -> Tensor:
    """(n, 2, 2): the output-to-input map of a counter-clockwise (as displayed) rotation, in
    pixel coordinates whose y axis points down."""
    a = torch.deg2rad(angle_deg)
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _pixel_to_theta(A: Tensor, b: Tensor, height: int, width: int) -> Tensor:
    """An output-to-input affine map in pixel-edge coordinates (x in [0, W], y in [0, H]),
    in = A @ out + b, as affine_grid's theta in its normalised coordinates (align_corners=False:
    pixel edge 0 is -1 and edge W is +1, so pixel = S (n + 1) with S = diag(W/2, H/2))."""
    S = torch.tensor([width / 2.0, height / 2.0], dtype=A.dtype, device=A.device)
    A_n = A * S[None, None, :] / S[None, :, None]  # S^-1 A S
    b_n = ((A * S[None, None, :]).sum(-1) + b) / S - 1.0  # S^-1 (A S 1 + b) - 1
    return torch.cat([A_n, b_n[..., None]], dim=-1)


def _affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """F.affine_grid(theta, (n, C, height, width), align_corners=False), built as two outer
    sums: affine_grid's batched matmul over every pixel costs as much as the resample itself."""
    n = theta.shape[0]
    opts = dict(dtype=theta.dtype, device=theta.device)
    u = (torch.arange(width, **opts) * 2 + 1) / width - 1  # pixel centers in [-1, 1]
    v = (torch.arange(height, **opts) * 2 + 1) / height - 1
    grid = torch.empty(n, height, width, 2, **opts)
    for k in range(2):  # k = 0: x (width), 1: y (height)
        row = theta[:, k, 1, None] * v + theta[:, k, 2, None]  # (n, height)
        col = theta[:, k, 0, None] * u  # (n, width)
        torch.add(row[:, :, None], col[:, None, :], out=grid[..., k])
    return grid


def _warp(x: Tensor, theta: Tensor, fill: Tensor | None, border: bool = False) -> Tensor:
    """One bilinear resample of each image by its (n, 2, 3) theta; points outside take fill
    ((1, C, 1, 1) in x's units; None = 0). border=True clamps to the edge pixels instead, for
    maps that never leave the image: zero padding would darken the half pixel at each edge."""
    grid = _affine_grid(theta.to(device=x.device, dtype=x.dtype, non_blocking=True),
                        x.shape[-2], x.shape[-1])
    if border:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # zero padding blends linearly with the bilinear weights, so shifting by fill first makes
    # edge pixels fade to fill exactly as a pixel-space image fades to black
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.add_(fill)


def _fill_tensor(fill, x: Tensor) -> Tensor | None:
    if _is_real(fill):
        return None if fill == 0 else torch.full((1, x.shape[1], 1, 1), float(fill),
                                                 dtype=x.dtype, device=x.device)
    vals = [float(v) for v in fill]
    if len(vals) != x.shape[1]:
        raise ValueError(f"fill has {len(vals)} values for {x.shape[1]} channels")
    return torch.tensor(vals, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def random_affine(x: Tensor, gen: torch.Generator,
                  crop_scale: tuple[float, float] = (0.08, 1.0),
                  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                  hflip: float = 0.5, rotate: float | tuple[float, float] = 0.0, *,
                  fill: float | Sequence[float] = 0.0) -> Tensor:
    """RandomResizedCrop (to the input size) + horizontal flip + rotation about the crop's
    center, per image, as ONE bilinear resample of the batch.

    rotate: d for uniform in [-d, d] degrees (counter-clockwise positive), or a pair (lo, hi).
    fill: the value, in x's units, of points outside the image; for normalised input pass
    (0 - mean) / std per channel (what Augmenter does), torchvision's fill=0 in pixel space.
    Identity settings (crop_scale=(1, 1), hflip=0, rotate=0) return x itself; flip alone is an
    exact x.flip(-1) per chosen image, no resample."""
    _check_images(x)
    _check_gen(gen)
    scale, ratio = _check_crop_scale(crop_scale), _check_crop_ratio(crop_ratio)
    hflip = _check_prob("hflip", hflip)
    angles = _check_rotate(rotate)
    crop, turn = scale != (1.0, 1.0), angles != (0.0, 0.0)
    if not (crop or turn or hflip > 0):
        return x
    B, _, H, W = x.shape
    dev = gen.device
    flips = (torch.rand(B, generator=gen, device=dev) < hflip if hflip > 0
             else torch.zeros(B, dtype=torch.bool, device=dev))
    if not (crop or turn):
        # a flip needs no interpolation: keep it bit-exact and cheap
        mask = flips.to(x.device, non_blocking=True).view(B, 1, 1, 1)
        return torch.where(mask, x.flip(-1), x)
    work = _work_dtype(x)
    f64 = torch.float64
    if crop:
        top, left, h, w = sample_crop_boxes(gen, B, H, W, scale, ratio).to(f64).unbind(1)
    else:
        top = left = torch.zeros(B, dtype=f64, device=dev)
        h, w = torch.full((B,), float(H), dtype=f64, device=dev), torch.full(
            (B,), float(W), dtype=f64, device=dev)
    angle = angles[0] + (angles[1] - angles[0]) * torch.rand(B, generator=gen, device=dev,
                                                            dtype=f64)
    # inverse map output pixel -> input pixel, composed right to left:
    #   undo the rotation about the output center, undo the flip, then scale into the crop box
    ctr = torch.tensor([W / 2.0, H / 2.0], dtype=f64, device=dev)
    R = _rotation_inverse(angle)
    sgn = torch.where(flips, -1.0, 1.0).to(f64)
    Fm = torch.diag_embed(torch.stack([sgn, torch.ones_like(sgn)], -1))
    D = torch.diag_embed(torch.stack([w / W, h / H], -1))
    A = D @ Fm @ R
    r_shift = ctr - (R @ ctr)  # R (o - c) + c = R o + (c - R c)
    f_shift = torch.stack([torch.where(flips, float(W), 0.0).to(f64), torch.zeros_like(sgn)], -1)
    b = (D @ ((Fm @ r_shift[..., None]).squeeze(-1) + f_shift)[..., None]).squeeze(-1)
    b = b + torch.stack([left, top], -1)
    theta = _pixel_to_theta(A, b, H, W)
    # without rotation every sample point lies inside the image (the crop box is), so the edges
    # replicate as a resize does; with it, points outside blend into fill as torchvision's rotate
    return _warp(work, theta, _fill_tensor(fill, work), border=not turn).to(x.dtype)


# --------------------------------------------------------------------------------------------
# colour, in pixel space [0, 1]
# --------------------------------------------------------------------------------------------

def _channel_tensors(mean, std, x: Tensor) -> tuple[Tensor, Tensor]:
    m = torch.tensor(_check_triple("mean", mean), dtype=x.dtype, device=x.device)
    s = torch.tensor(_check_triple("std", std, positive=True), dtype=x.dtype, device=x.device)
    return m.view(1, 3, 1, 1), s.view(1, 3, 1, 1)


def _to_pixels(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    # a fresh tensor: the colour ops below may write into it in place
    return torch.addcmul(mean, x, std).clamp_(0.0, 1.0)


def _to_normalised(p: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    # (p - mean) / std in one pass
    return torch.addcmul(-mean / std, p, 1.0 / std)


def _gray(p: Tensor) -> Tensor:
    r, g, b = p.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _blend(img: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    # torchvision's _blend: factor * img + (1 - factor) * other, clamped to the valid range;
    # lerp does it in one pass over the image
    return torch.lerp(other.expand_as(img), img, factor).clamp_(0.0, 1.0)


def _brightness(p: Tensor, factor: Tensor) -> Tensor:
    return (p * factor).clamp_(0.0, 1.0)


def _contrast(p: Tensor, factor: Tensor) -> Tensor:
    return _blend(p, _gray(p).mean(dim=(-3, -2, -1), keepdim=True), factor)


def _saturation(p: Tensor, factor: Tensor) -> Tensor:
    return _blend(p, _gray(p), factor)


def _sharpness(p: Tensor, factor: Tensor) -> Tensor:
    # torchvision's adjust_sharpness: blend with a smoothed copy whose border pixels are the
    # original ones
    if p.shape[-1] <= 2 or p.shape[-2] <= 2:
        return p
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=p.dtype,
                     device=p.device) / 13.0
    smooth = F.conv2d(p, k.expand(p.shape[1], 1, 3, 3), groups=p.shape[1])
    degenerate = p.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(p, degenerate, factor)


def _autocontrast(p: Tensor) -> Tensor:
    lo = p.amin(dim=(-2, -1), keepdim=True)
    hi = p.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo  # a constant channel stays as it is
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((p - lo) * scale).clamp_(0.0, 1.0)


def _equalize(p: Tensor) -> Tensor:
    """torchvision's equalize on the image quantised to 256 levels, every channel at once:
    per-channel histograms by scatter_add, then PIL's lookup table."""
    n, c, h, w = p.shape
    v = (p * 255.0).round_().long().view(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.float64, device=p.device)
    hist.scatter_add_(1, v, torch.ones_like(v, dtype=torch.float64))
    # step = (pixels - count of the last non-empty bin) // 255; the last non-empty bin is the max
    last = hist.gather(1, v.amax(1, keepdim=True))
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    safe = step.clamp_min(1.0)
    lut = torch.div(hist.cumsum(1) + torch.div(safe, 2, rounding_mode="floor"), safe,
                    rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp_(0, 255)
    out = lut.gather(1, v).to(p.dtype).div_(255.0)
    # step 0 (a channel of at most one level, roughly): torchvision returns it unchanged
    out = torch.where(step > 0, out, p.reshape(n * c, h * w))
    return out.view(n, c, h, w)


def _posterize(p: Tensor, bits: int) -> Tensor:
    q = float(2 ** (8 - bits))
    return (p * 255.0).round_().div_(q).floor_().mul_(q / 255.0)


def _solarize(p: Tensor, threshold: float) -> Tensor:
    return torch.where(p >= threshold, 1.0 - p, p)


def _jitter_pixels(p: Tensor, gen: torch.Generator, strength: float) -> Tensor:
    """ColorJitter(brightness=s, contrast=s, saturation=s) on pixels in [0, 1]: each factor
    uniform in [max(0, 1 - s), 1 + s] per image, the three ops in one random order per batch."""
    B = p.shape[0]
    lo, hi = max(0.0, 1.0 - strength), 1.0 + strength
    u = torch.rand(3, B, generator=gen, device=gen.device)
    factors = (lo + (hi - lo) * u).to(p.device, p.dtype, non_blocking=True).view(3, B, 1, 1, 1)
    order = torch.randperm(3, generator=gen, device=gen.device).tolist()
    ops = (_brightness, _contrast, _saturation)
    for k in order:
        p = ops[k](p, factors[k])
    return p


def color_jitter(x: Tensor, gen: torch.Generator, strength: float, mean: Sequence[float],
                 std: Sequence[float]) -> Tensor:
    """torchvision's ColorJitter(strength, strength, strength) on a normalised batch: the
    images are un-normalised to pixels in [0, 1] (clamped), jittered, clamped, re-normalised."""
    _check_images(x, channels=3)
    _check_gen(gen)
    strength = _check_nonneg("color_jitter strength", strength)
    if strength == 0:
        return x
    work = _work_dtype(x)
    m, s = _channel_tensors(mean, std, work)
    p = _jitter_pixels(_to_pixels(work, m, s), gen, strength)
    return _to_normalised(p, m, s).to(x.dtype)


def _ra_magnitude(op: str, magnitude: int, height: int, width: int) -> float:
    """torchvision RandAugment's magnitude bin `magnitude` of 0..30 for op, in pixel units
    [0, 1] where torchvision's are 0..255."""
    frac = magnitude / _MAX_MAGNITUDE
    if op in ("ShearX", "ShearY"):
        return 0.3 * frac
    if op == "TranslateX":
        return 150.0 / 331.0 * width * frac
    if op == "TranslateY":
        return 150.0 / 331.0 * height * frac
    if op == "Rotate":
        return 30.0 * frac
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return 0.9 * frac
    if op == "Posterize":  # bits kept, 8 down to 4
        return float(8 - int(round(magnitude / (_MAX_MAGNITUDE / 4))))
    if op == "Solarize":  # threshold, 1 down to 0
        return 1.0 - frac
    return 0.0


def _ra_geometry(ops: list[str], signs: Tensor, magnitude: int, height: int,
                 width: int) -> Tensor:
    """(n, 2, 3) thetas for the geometric RandAugment ops, one per image; signs (n,) of +-1."""
    n = len(ops)
    f64 = torch.float64
    A = torch.eye(2, dtype=f64).repeat(n, 1, 1)
    b = torch.zeros(n, 2, dtype=f64)
    ctr = torch.tensor([width / 2.0, height / 2.0], dtype=f64)
    for i, op in enumerate(ops):
        m = float(signs[i]) * _ra_magnitude(op, magnitude, height, width)
        if op == "ShearX":  # about the top-left corner, as torchvision's center=[0, 0]
            A[i, 0, 1] = m
        elif op == "ShearY":
            A[i, 1, 0] = m
        elif op == "TranslateX":  # whole pixels, as torchvision's int(magnitude)
            b[i, 0] = -float(int(m))
        elif op == "TranslateY":
            b[i, 1] = -float(int(m))
        else:  # Rotate about the center
            R = _rotation_inverse(torch.tensor([m], dtype=f64))[0]
            A[i], b[i] = R, ctr - R @ ctr
    return _pixel_to_theta(A, b, height, width)


def _rand_augment_pixels(p: Tensor, gen: torch.Generator, num_ops: int,
                         magnitude: int) -> Tensor:
    """RandAugment on pixels in [0, 1]; writes into p. Each round draws one op and one sign per
    image; the images are grouped by op so each op runs once per round on its group, and all the
    geometric ops of a round share one resample."""
    B, _, H, W = p.shape
    names = RAND_AUGMENT_OPS
    for _ in range(num_ops):
        # drawn on the generator's device, grouped on the host (no sync for a CPU generator)
        draw = torch.randint(0, len(names), (B,), generator=gen, device=gen.device).cpu()
        signs = (torch.randint(0, 2, (B,), generator=gen, device=gen.device).cpu() * 2 - 1)
        drawn = [names[k] for k in draw.tolist()]
        geo = [i for i in range(B) if drawn[i] in _GEOMETRIC_OPS]
        if geo:
            idx = torch.tensor(geo, device=p.device)
            theta = _ra_geometry([drawn[i] for i in geo], signs[geo], magnitude, H, W)
            p.index_copy_(0, idx, _warp(p.index_select(0, idx), theta, None))
        for k in torch.unique(draw).tolist():
            op = names[k]
            if op == "Identity" or op in _GEOMETRIC_OPS:
                continue
            rows = (draw == k).nonzero().squeeze(1)
            everyone = len(rows) == B
            idx = rows.to(p.device, non_blocking=True)
            sub = p if everyone else p.index_select(0, idx)
            mag = _ra_magnitude(op, magnitude, H, W)
            if op in ("Brightness", "Color", "Contrast", "Sharpness"):
                factor = (1.0 + signs[rows].to(torch.float64) * mag).to(
                    p.device, p.dtype, non_blocking=True).view(-1, 1, 1, 1)
                fn = {"Brightness": _brightness, "Color": _saturation, "Contrast": _contrast,
                      "Sharpness": _sharpness}[op]
                out = fn(sub, factor)
            elif op == "Posterize":
                out = _posterize(sub, int(mag))
            elif op == "Solarize":
                out = _solarize(sub, mag)
            elif op == "AutoContrast":
                out = _autocontrast(sub)
            else:
                out = _equalize(sub)
            if everyone:
                p = out
            else:
                p.index_copy_(0, idx, out)
    return p


def rand_augment(x: Tensor, gen: torch.Generator, num_ops: int, magnitude: int,
                 mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """torchvision's RandAugment(num_ops, magnitude) on a normalised batch, per image: each of
    num_ops rounds picks one of RAND_AUGMENT_OPS uniformly and, for the signed ops, a random
    sign; magnitudes are torchvision's bins of 0..30. Runs in pixel space like color_jitter."""
    _check_images(x, channels=3)
    _check_gen(gen)
    num_ops = _check_int("randaugment_ops", num_ops, 0)
    magnitude = _check_int("randaugment_magnitude", magnitude, 0, _MAX_MAGNITUDE)
    if num_ops == 0:
        return x
    work = _work_dtype(x)
    m, s = _channel_tensors(mean, std, work)
    p = _rand_augment_pixels(_to_pixels(work, m, s), gen, num_ops, magnitude)
    return _to_normalised(p, m, s).to(x.dtype)


# --------------------------------------------------------------------------------------------
# targets and mixing
# --------------------------------------------------------------------------------------------

def soft_targets(labels: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """(B, num_classes) float32 one-hot targets with label smoothing, timm's values: every class
    smoothing / num_classes, the label's class 1 - smoothing + smoothing / num_classes."""
    num_classes = _check_int("num_classes", num_classes, 1)
    if not _is_real(smoothing) or not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label_smoothing must lie in [0, 1), got {smoothing!r}")
    if not isinstance(labels, Tensor) or labels.ndim != 1 or labels.is_floating_point() or (
            labels.dtype == torch.bool):
        raise ValueError("labels must be a 1-D integer tensor of class indices, got "
                         + (f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor)
                            else type(labels).__name__))
    if labels.device.type == "cpu" and labels.numel() and (
            int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        # checked on the host only: on a GPU the check would stall the step
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    out = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32,
                     device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), on)


class MixParams(NamedTuple):
    """One batch's mix: mode "none", "mixup" or "cutmix"; lam, the weight of each image itself
    (1.0 when not mixed; for cutmix the exact unpasted area fraction); box (y0, y1, x0, x1) of
    the pasted region for cutmix, else None."""
    mode: str
    lam: float
    box: tuple[int, int, int, int] | None = None


def sample_mix(gen: torch.Generator, height: int, width: int, mixup_alpha: float = 0.0,
               cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
               switch_prob: float = 0.5) -> MixParams:
    """Draw one batch's mix as timm's Mixup (mode "batch") does. lambda ~ Beta(alpha, alpha),
    sampled by a numpy Generator seeded from one draw of gen (torch's Beta/Gamma samplers take no
    generator), so it is reproducible from gen's state like every other draw."""
    mixup_alpha = _check_nonneg("mixup_alpha", mixup_alpha, " (0 = off)")
    cutmix_alpha = _check_nonneg("cutmix_alpha", cutmix_alpha, " (0 = off)")
    mix_prob = _check_prob("mix_prob", mix_prob)
    switch_prob = _check_prob("switch_prob", switch_prob)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return MixParams("none", 1.0)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen, device=gen.device).item())
    rng = np.random.default_rng(seed)
    if mixup_alpha > 0 and cutmix_alpha > 0:
        cut = bool(rng.random() < switch_prob)
    else:
        cut = cutmix_alpha > 0
    alpha = cutmix_alpha if cut else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if not rng.random() < mix_prob:
        return MixParams("none", 1.0)
    if not cut:
        return MixParams("mixup", lam)
    # timm's rand_bbox: a box of side fraction sqrt(1 - lam) centered anywhere, clipped to the
    # image; lam is then corrected to the area actually kept
    r = math.sqrt(1.0 - lam)
    ch, cw = int(height * r), int(width * r)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = min(max(cy - ch // 2, 0), height), min(max(cy + ch // 2, 0), height)
    x0, x1 = min(max(cx - cw // 2, 0), width), min(max(cx + cw // 2, 0), width)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
    return MixParams("cutmix", lam, (y0, y1, x0, x1))


def apply_mix(x: Tensor, targets: Tensor, params: MixParams) -> tuple[Tensor, Tensor]:
    """Mix each image (and its target) with the one at the mirrored batch position, x.flip(0):
    mixup blends whole images, cutmix pastes params.box; targets get weight lam on their own."""
    if params.mode == "none" or (params.mode == "mixup" and params.lam == 1.0):
        return x, targets
    lam = params.lam
    if params.mode == "mixup":
        x = x * lam + x.flip(0) * (1.0 - lam)
    elif params.mode == "cutmix":
        y0, y1, x0, x1 = params.box
        x = x.clone()  # never write into the caller's batch
        x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
    else:
        raise ValueError(f"unknown mix mode {params.mode!r}; expected none, mixup or cutmix")
    return x, targets * lam + targets.flip(0) * (1.0 - lam)


def mix(x: Tensor, targets: Tensor, gen: torch.Generator, mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0, mix_prob: float = 1.0,
        switch_prob: float = 0.5) -> tuple[Tensor, Tensor]:
    """Mixup or cutmix of a batch with its reverse (timm's Mixup, mode "batch"); targets are
    soft (B, num_classes) and mixed with the same lambda. See sample_mix and apply_mix."""
    _check_images(x)
    _check_gen(gen)
    if not isinstance(targets, Tensor) or targets.ndim != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(f"targets must be soft targets (B, num_classes) with B = {x.shape[0]}, "
                         f"got {tuple(targets.shape) if isinstance(targets, Tensor) else targets}")
    params = sample_mix(gen, x.shape[-2], x.shape[-1], mixup_alpha, cutmix_alpha, mix_prob,
                        switch_prob)
    return apply_mix(x, targets, params)


# --------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------

class Augmenter:
    """A training batch's augmentation: Augmenter(settings, mean, std, num_classes)(x, labels,
    gen) -> (augmented x, soft targets). Settings are checked at construction."""

    def __init__(self, settings: AugmentSettings, mean: Sequence[float], std: Sequence[float],
                 num_classes: int):
        if not isinstance(settings, AugmentSettings):
            raise TypeError(f"settings must be an AugmentSettings, got {type(settings).__name__}")
        self.settings = settings
        self.mean = _check_triple("mean", mean)
        self.std = _check_triple("std", std, positive=True)
        self.num_classes = _check_int("num_classes", num_classes, 1)
        # torchvision's fill=0 is black in pixel space: its value after normalisation
        self.fill = tuple(-m / s for m, s in zip(self.mean, self.std))

    def __repr__(self) -> str:
        return (f"Augmenter({self.settings!r}, mean={self.mean}, std={self.std}, "
                f"num_classes={self.num_classes})")

    def __call__(self, x: Tensor, labels: Tensor,
                 gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """(augmented x (B, 3, H, W), same dtype and device; soft targets (B, num_classes)
        float32 summing to 1): geometry (crop + flip + rotate, one resample), colour (jitter,
        RandAugment), label smoothing on each one-hot, then mixup / cutmix (timm's order)."""
        _check_images(x, channels=3)
        _check_gen(gen)
        if not isinstance(labels, Tensor) or labels.shape != (x.shape[0],):
            raise ValueError(f"labels must be a 1-D tensor of {x.shape[0]} class indices, got "
                             + (f"shape {tuple(labels.shape)}" if isinstance(labels, Tensor)
                                else type(labels).__name__))
        s = self.settings
        work = _work_dtype(x)
        work = random_affine(work, gen, s.crop_scale, s.crop_ratio, s.hflip, s.rotate,
                             fill=self.fill)
        if s.color_jitter > 0 or s.randaugment_ops > 0:
            m, sd = _channel_tensors(self.mean, self.std, work)
            p = _to_pixels(work, m, sd)
            if s.color_jitter > 0:
                p = _jitter_pixels(p, gen, s.color_jitter)
            if s.randaugment_ops > 0:
                p = _rand_augment_pixels(p, gen, s.randaugment_ops, s.randaugment_magnitude)
            work = _to_normalised(p, m, sd)
        targets = soft_targets(labels.to(work.device), self.num_classes, s.label_smoothing)
        if s.mixup_alpha > 0 or s.cutmix_alpha > 0:
            params = sample_mix(gen, x.shape[-2], x.shape[-1], s.mixup_alpha, s.cutmix_alpha,
                                s.mix_prob, s.switch_prob)
            work, targets = apply_mix(work, targets, params)
        return work.to(x.dtype), targets
