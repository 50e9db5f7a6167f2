"""polyvit.training.augment: reproducibility from the generator, exact identities, the crop
sampler's distribution, geometry against torch's own ops, colour ranges, soft targets and the
mixing weights, and the errors bad settings raise."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polyvit.training.augment import (
    RAND_AUGMENT_OPS, AugmentSettings, Augmenter, MixParams, apply_mix, color_jitter, mix,
    rand_augment, random_affine, sample_crop_boxes, sample_mix, soft_targets)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FULL = AugmentSettings(crop_scale=(0.08, 1.0), hflip=0.5, rotate=15.0, color_jitter=0.4,
                       randaugment_ops=2, randaugment_magnitude=9, mixup_alpha=0.8,
                       cutmix_alpha=1.0, label_smoothing=0.1)
IDENTITY = AugmentSettings(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, rotate=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normalised_batch(b: int = 8, h: int = 16, w: int = 16, seed: int = 1) -> torch.Tensor:
    pixels = torch.rand(b, 3, h, w, generator=gen(seed))
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def pixel_bounds() -> tuple[torch.Tensor, torch.Tensor]:
    m, s = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (0 - m) / s, (1 - m) / s


# ---------------------------------------------------------------------------------------------
# reproducibility
# ---------------------------------------------------------------------------------------------

def test_same_generator_state_same_output_and_other_seed_differs():
    x, labels = normalised_batch(), torch.arange(8) % 5
    aug = Augmenter(FULL, MEAN, STD, num_classes=5)
    g = gen(3)
    state = g.get_state()
    a = aug(x, labels, g)
    g.set_state(state)  # resuming from a saved state replays the same batch
    b = aug(x, labels, g)
    c = aug(x, labels, gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("fn", [
    lambda x, g: random_affine(x, g, rotate=20.0),
    lambda x, g: color_jitter(x, g, 0.4, MEAN, STD),
    lambda x, g: rand_augment(x, g, 3, 15, MEAN, STD),
    lambda x, g: mix(x, soft_targets(torch.arange(8), 8), g, 0.8, 1.0)[0],
], ids=["affine", "jitter", "randaugment", "mix"])
def test_each_piece_reproducible(fn):
    x = normalised_batch()
    assert torch.equal(fn(x, gen(7)), fn(x, gen(7)))
    assert not torch.equal(fn(x, gen(7)), fn(x, gen(8)))


def test_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    Augmenter(FULL, MEAN, STD, 5)(normalised_batch(), torch.arange(8) % 5, gen())
    assert torch.equal(torch.random.get_rng_state(), before)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def test_identity_settings_return_x_bit_exact():
    x, labels = normalised_batch(), torch.arange(8) % 4
    assert random_affine(x, gen(), (1.0, 1.0), (1.0, 1.0), 0.0, 0.0) is x
    out, targets = Augmenter(IDENTITY, MEAN, STD, 4)(x, labels, gen())
    assert torch.equal(out, x)
    assert torch.equal(targets, F.one_hot(labels, 4).float())


def test_hflip_always_without_crop_is_flip():
    x = normalised_batch()
    out = random_affine(x, gen(), (1.0, 1.0), (1.0, 1.0), hflip=1.0, rotate=0.0)
    assert torch.equal(out, x.flip(-1))


def test_rotate_90_matches_rot90():
    x = normalised_batch(4, 12, 12)
    out = random_affine(x, gen(), (1.0, 1.0), (1.0, 1.0), hflip=0.0, rotate=(90.0, 90.0))
    expect = torch.rot90(x, 1, dims=(-2, -1))  # positive angles turn counter-clockwise
    torch.testing.assert_close(out[..., 1:-1, 1:-1], expect[..., 1:-1, 1:-1], atol=1e-5,
                               rtol=0)


def test_rotation_fills_black_pixels_in_normalised_space():
    x = normalised_batch(2, 16, 16)
    out = random_affine(x, gen(), (1.0, 1.0), (1.0, 1.0), 0.0, (45.0, 45.0),
                        fill=pixel_bounds()[0].flatten().tolist())
    black = pixel_bounds()[0].view(3)
    # the corners of a 45-degree turn come from outside the image
    torch.testing.assert_close(out[:, :, 0, 0], black.expand(2, 3), atol=1e-5, rtol=0)


def test_crop_without_flip_or_rotation_is_resized_box():
    x = normalised_batch(6, 20, 24)
    g = gen(5)
    boxes = sample_crop_boxes(gen(5), 6, 20, 24, (0.2, 0.6), (0.5, 2.0))
    out = random_affine(x, g, (0.2, 0.6), (0.5, 2.0), hflip=0.0, rotate=0.0)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        ref = F.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=(20, 24),
                            mode="bilinear", align_corners=False)[0]
        # compare the output pixels whose bilinear taps all lie inside the box (interpolate
        # clamps at the box edge; the resample reads the image beyond it)
        ys = [r for r in range(20) if 0 <= (r + 0.5) * h / 20 - 0.5 <= h - 1]
        xs = [c for c in range(24) if 0 <= (c + 0.5) * w / 24 - 0.5 <= w - 1]
        sel = (slice(None), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        torch.testing.assert_close(out[i][sel], ref[sel], atol=1e-5, rtol=0)


def test_crop_keeps_a_constant_image_constant():
    # the resample clamps at the image's edge without rotation: no fill bleeds into a crop that
    # touches the border
    x = torch.tensor([0.3, -1.2, 2.0]).view(1, 3, 1, 1).expand(16, 3, 10, 14).contiguous()
    out = random_affine(x, gen(), (0.08, 1.0), (0.5, 2.0), hflip=0.5, rotate=0.0, fill=-5.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_crop_boxes_inside_and_distribution_in_range():
    H, W, n = 32, 48, 4000
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = sample_crop_boxes(gen(11), n, H, W, scale, ratio)
    top, left, h, w = boxes.unbind(1)
    assert boxes.dtype == torch.int64 and boxes.shape == (n, 4)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= H).all() and (left + w <= W).all()
    area = (h * w).double() / (H * W)
    aspect = w.double() / h.double()
    # integer rounding of the sides moves area and aspect a little past the drawn values
    side = 1.0 / min(h.min().item(), w.min().item())
    assert area.min() >= scale[0] * (1 - 2 * side) and area.max() <= 1.0
    assert aspect.min() >= ratio[0] * (1 - 2 * side) and aspect.max() <= ratio[1] * (1 + 2 * side)
    # log-uniform aspect: about half the boxes are wider than tall
    assert 0.4 < (aspect > 1).double().mean() < 0.6
    # area uniform in scale where the box fits: the median lies well inside the range
    assert 0.25 < area.median() < 0.6


def test_crop_boxes_fall_back_to_center_crop():
    # scale (1, 1) with aspects far from the image's never fits: torchvision's center crop
    boxes = sample_crop_boxes(gen(), 16, 20, 40, (1.0, 1.0), (0.5, 0.6))
    assert (boxes == torch.tensor([0, 14, 20, 12])).all()  # h = 20, w = round(20 * 0.6) = 12


# ---------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["jitter", "randaugment", "full"])
def test_colour_stays_in_pixel_range(op):
    x = normalised_batch(32, 16, 16) * 1.5  # some values past [0, 1] pixels: clamped first
    lo, hi = pixel_bounds()
    if op == "jitter":
        out = color_jitter(x, gen(), 0.9, MEAN, STD)
    elif op == "randaugment":
        out = rand_augment(x, gen(), 4, 30, MEAN, STD)
    else:
        out = Augmenter(FULL, MEAN, STD, 10)(x, torch.arange(32) % 10, gen())[0]
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
    assert not torch.equal(out, x)


def test_every_randaugment_op_runs_and_keeps_range():
    # many images and rounds so that every op is drawn; each op's output stays in range
    x = normalised_batch(len(RAND_AUGMENT_OPS) * 8, 12, 12)
    lo, hi = pixel_bounds()
    for magnitude in (0, 9, 30):
        out = rand_augment(x, gen(magnitude), 3, magnitude, MEAN, STD)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()


def test_zero_strength_colour_is_identity():
    x = normalised_batch()
    assert color_jitter(x, gen(), 0.0, MEAN, STD) is x
    assert rand_augment(x, gen(), 0, 9, MEAN, STD) is x


# ---------------------------------------------------------------------------------------------
# targets and mixing
# ---------------------------------------------------------------------------------------------

def test_soft_targets_values():
    labels = torch.tensor([0, 3, 9])
    t = soft_targets(labels, 10, 0.1)
    assert t.dtype == torch.float32 and t.shape == (3, 10)
    torch.testing.assert_close(t.sum(1), torch.ones(3))
    assert t[0, 0] == pytest.approx(0.9 + 0.01) and t[0, 1] == pytest.approx(0.01)
    assert torch.equal(soft_targets(labels, 10), F.one_hot(labels, 10).float())


def test_mixup_targets_carry_lambda_exactly():
    x = normalised_batch(8)
    t = soft_targets(torch.arange(8), 8, 0.1)
    params = sample_mix(gen(2), 16, 16, mixup_alpha=0.4)
    assert params.mode == "mixup" and 0 <= params.lam <= 1
    out, mixed = apply_mix(x, t, params)
    lam = params.lam
    assert torch.equal(mixed, t * lam + t.flip(0) * (1 - lam))
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
    torch.testing.assert_close(mixed.sum(1), torch.ones(8))
    # the same draws through mix()
    out2, mixed2 = mix(x, t, gen(2), mixup_alpha=0.4)
    assert torch.equal(out, out2) and torch.equal(mixed, mixed2)


def test_cutmix_lambda_is_kept_area_fraction():
    B, H, W = 6, 20, 30
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, H, W).contiguous()
    t = soft_targets(torch.arange(B), B)
    seen = 0
    for seed in range(20):
        out, mixed = mix(x, t, gen(seed), cutmix_alpha=1.0)
        own = (out[:, 0] == x[:, 0]).double().mean(dim=(1, 2))
        lam = mixed[0, 0].item()  # one-hot labels: the own class's weight is lambda
        for i in range(B):
            if i != B - 1 - i:
                assert own[i].item() == pytest.approx(lam, abs=1e-6)
                assert mixed[i, B - 1 - i].item() == pytest.approx(1 - lam, abs=1e-6)
        seen += lam < 1
        torch.testing.assert_close(mixed.sum(1), torch.ones(B))
    assert seen > 10  # most draws paste a non-empty box
    assert x[0, 0, 0, 0] == 0  # the input batch is not written into


def test_mix_prob_zero_and_switch():
    x, t = normalised_batch(), soft_targets(torch.arange(8), 8)
    out, mixed = mix(x, t, gen(), 1.0, 1.0, mix_prob=0.0)
    assert out is x and mixed is t
    modes = {sample_mix(gen(s), 16, 16, 1.0, 1.0, 1.0, switch_prob=1.0).mode for s in range(10)}
    assert modes == {"cutmix"}
    modes = {sample_mix(gen(s), 16, 16, 1.0, 1.0, 1.0, switch_prob=0.0).mode for s in range(10)}
    assert modes == {"mixup"}
    assert apply_mix(x, t, MixParams("none", 1.0)) == (x, t)


def test_augmenter_targets_sum_to_one_and_smoothing_floor():
    labels = torch.arange(16) % 7
    _, t = Augmenter(FULL, MEAN, STD, 7)(normalised_batch(16), labels, gen(9))
    assert t.shape == (16, 7) and t.dtype == torch.float32
    torch.testing.assert_close(t.sum(1), torch.ones(16))
    assert (t >= 0.1 / 7 - 1e-7).all()  # smoothing is applied before mixing


# ---------------------------------------------------------------------------------------------
# dtype, shape, device; errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_shape_device_kept(dtype):
    x = normalised_batch(4, 16, 12).to(dtype)
    out, t = Augmenter(FULL, MEAN, STD, 3)(x, torch.tensor([0, 1, 2, 0]), gen())
    assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
    assert t.dtype == torch.float32 and t.shape == (4, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu():
    x, labels = normalised_batch(8), torch.arange(8) % 4
    aug = Augmenter(FULL, MEAN, STD, 4)
    cpu = aug(x, labels, gen(1))
    gpu = aug(x.cuda(), labels.cuda(), gen(1))
    assert gpu[0].is_cuda and gpu[1].is_cuda
    # the quantising ops (Posterize, Equalize) may round a rare pixel to the next level
    assert (gpu[0].cpu() - cpu[0]).abs().mean() < 1e-3
    torch.testing.assert_close(gpu[1].cpu(), cpu[1])


@pytest.mark.parametrize("kwargs, words", [
    (dict(hflip=-0.1), "hflip"), (dict(hflip=1.5), "hflip"), (dict(mix_prob=-1), "mix_prob"),
    (dict(switch_prob=2.0), "switch_prob"), (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.5, 1.2)), "crop_scale"), (dict(crop_scale=(0.9, 0.5)), "crop_scale"),
    (dict(crop_ratio=(-1.0, 1.0)), "crop_ratio"), (dict(mixup_alpha=-0.2), "mixup_alpha"),
    (dict(cutmix_alpha=-1.0), "cutmix_alpha"), (dict(rotate=-5.0), "rotate"),
    (dict(color_jitter=-0.1), "color_jitter"), (dict(randaugment_ops=-1), "randaugment_ops"),
    (dict(randaugment_magnitude=31), "randaugment_magnitude"),
    (dict(label_smoothing=1.0), "label_smoothing"), (dict(hflip=math.nan), "hflip"),
])
def test_bad_settings_raise_value_error(kwargs, words):
    with pytest.raises(ValueError, match=words):
        AugmentSettings(**kwargs)


def test_bad_augmenter_arguments():
    with pytest.raises(ValueError, match="std"):
        Augmenter(AugmentSettings(), MEAN, (0.2, 0.0, 0.2), 10)
    with pytest.raises(ValueError, match="mean"):
        Augmenter(AugmentSettings(), (0.5, 0.5), STD, 10)
    with pytest.raises(ValueError, match="num_classes"):
        Augmenter(AugmentSettings(), MEAN, STD, 0)
    with pytest.raises(ValueError, match="crop_scale"):
        random_affine(normalised_batch(), gen(), crop_scale=(0.5, 2.0))
    with pytest.raises(ValueError, match="labels"):
        soft_targets(torch.tensor([0, 5]), 5)
    with pytest.raises(TypeError, match="Generator"):
        Augmenter(AugmentSettings(), MEAN, STD, 5)(normalised_batch(), torch.zeros(8).long(), 0)
