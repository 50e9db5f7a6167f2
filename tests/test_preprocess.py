"""preprocess(): the resize/crop rules, the five-crop evaluation, and every image mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import polyvit
from polyvit.config import get_config

TIMM = get_config("vit_small_patch32_224")   # shorter side to 248 bicubic, crop 224, mean=std=0.5
SEED = get_config("vit_small_patch32_224_seed")  # squash to 224x224 bilinear


def halves(width: int, height: int) -> Image.Image:
    """Left half pure red, right half pure blue."""
    a = np.zeros((height, width, 3), np.uint8)
    a[:, : width // 2, 0] = 255
    a[:, width // 2:, 2] = 255
    return Image.fromarray(a)


def test_output_shape_dtype_and_normalisation():
    x = polyvit.preprocess(Image.new("RGB", (300, 200), (255, 0, 128)), TIMM)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 100, 100], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-6)


def test_timm_rule_resizes_the_shorter_side_then_center_crops():
    """A 2:1 image: the shorter side becomes 248, the crop keeps the middle 224 of 496, so
    both colours survive at the centre seam and the crop's edges stay pure."""
    x = polyvit.preprocess(halves(800, 400), TIMM)
    assert x[0, 112, 0] == pytest.approx(1.0) and x[2, 112, 0] == pytest.approx(-1.0)
    assert x[2, 112, 223] == pytest.approx(1.0) and x[0, 112, 223] == pytest.approx(-1.0)


def test_squash_rule_keeps_the_whole_image():
    """Squashing 800x400 to 224x224 keeps the seam at the centre column."""
    x = polyvit.preprocess(halves(800, 400), SEED)
    assert x[0, 112, 50] == pytest.approx(1.0) and x[2, 112, 170] == pytest.approx(1.0)


def test_five_crop_gives_corners_and_centre():
    """Shorter side to 336, then four corner crops and the centre crop."""
    a = np.zeros((600, 600, 3), np.uint8)
    a[:300, :300] = (255, 0, 0)     # top-left red
    a[:300, 300:] = (0, 255, 0)     # top-right green
    a[300:, :300] = (0, 0, 255)     # bottom-left blue
    a[300:, 300:] = (255, 255, 255)  # bottom-right white
    crops = polyvit.preprocess(a, SEED, crops="five")
    assert crops.shape == (5, 3, 224, 224)
    corner_colour = [c[:, 0, 0] if i == 0 else c[:, 0, -1] if i == 1 else c[:, -1, 0] if i == 2
                     else c[:, -1, -1] for i, c in enumerate(crops[:4])]
    expected = [(1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, 1)]
    for got, want in zip(corner_colour, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    centre = crops[4]  # rows/cols 56..279 of the 336 image: spans all four quadrants
    np.testing.assert_allclose(centre[:, 0, 0], (1, -1, -1), atol=1e-6)
    np.testing.assert_allclose(centre[:, -1, -1], (1, 1, 1), atol=1e-6)


@pytest.mark.parametrize("source", ["path", "str", "bytes", "pil", "array"])
def test_accepts_paths_bytes_pil_and_arrays(tmp_path, source):
    image = halves(64, 48)
    path = tmp_path / "x.png"
    image.save(path)
    value = {"path": path, "str": str(path), "bytes": path.read_bytes(), "pil": image,
             "array": np.asarray(image)}[source]
    np.testing.assert_array_equal(polyvit.preprocess(value, TIMM), polyvit.preprocess(image, TIMM))


def gray_ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))


def png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_grayscale_becomes_three_equal_channels():
    x = polyvit.preprocess(png_bytes(Image.fromarray(gray_ramp(), "L")), TIMM)
    np.testing.assert_array_equal(x[0], x[1])
    np.testing.assert_array_equal(x[0], x[2])
    expected = polyvit.preprocess(Image.fromarray(gray_ramp(), "L").convert("RGB"), TIMM)
    np.testing.assert_array_equal(x, expected)


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    ramp16 = (gray_ramp().astype(np.uint16) * 257)  # the same ramp in 16 bits
    image16 = Image.fromarray(ramp16)
    assert image16.mode.startswith("I;16")
    data = png_bytes(image16)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")  # a 16-bit PNG on disk
    x16 = polyvit.preprocess(data, SEED)  # squash keeps the whole ramp, black to white
    x8 = polyvit.preprocess(Image.fromarray(gray_ramp(), "L"), SEED)
    np.testing.assert_allclose(x16, x8, atol=2 / 255 * 2)
    assert x16.min() < -0.9 and x16.max() > 0.9  # clipping would saturate at white


def test_rgba_drops_alpha():
    rgb = np.asarray(halves(64, 48))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 60, np.uint8)])
    x = polyvit.preprocess(png_bytes(Image.fromarray(rgba, "RGBA")), TIMM)
    np.testing.assert_array_equal(x, polyvit.preprocess(Image.fromarray(rgb), TIMM))


def test_palette_image():
    image = halves(64, 48).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    x = polyvit.preprocess(png_bytes(image), TIMM)
    np.testing.assert_allclose(x, polyvit.preprocess(halves(64, 48), TIMM), atol=1e-6)


def test_palette_with_transparency():
    image = halves(64, 48).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    image.info["transparency"] = 0
    x = polyvit.preprocess(png_bytes(image, transparency=0), TIMM)
    assert x.shape == (3, 224, 224) and np.isfinite(x).all()


def test_cmyk_jpeg():
    cmyk = halves(64, 48).convert("CMYK")
    x = polyvit.preprocess(png_bytes(cmyk, format="JPEG", quality=95), TIMM)
    # red stays mostly red and blue mostly blue after CMYK -> RGB
    assert x[0, 112, 5] > 0.5 and x[2, 112, 5] < -0.5 and x[2, 112, 218] > 0.5


@pytest.mark.parametrize("mode", ["1", "LA", "F", "I"])
def test_other_modes_work(mode):
    base = Image.fromarray(gray_ramp(), "L")
    image = base.convert(mode) if mode != "F" else Image.fromarray(gray_ramp() / 255.0, "F") \
        .convert("F")
    x = polyvit.preprocess(image, TIMM)
    assert x.shape == (3, 224, 224) and np.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_exif_orientation_is_applied():
    """A JPEG stored sideways with orientation 6 comes out upright (taller than wide)."""
    image = halves(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = png_bytes(image, format="JPEG", exif=exif.tobytes(), quality=95)
    upright = polyvit.load_image(data)
    assert upright.size == (40, 80)


def test_sample_image_is_bundled():
    from polyvit.labels import sample_image_path

    assert polyvit.preprocess(sample_image_path(), TIMM).shape == (3, 224, 224)


def test_imagenet_class_names_are_bundled():
    names = polyvit.imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"


@pytest.mark.parametrize("config", ["vit_small_patch32_224", "vit_small_patch32_224_seed"])
def test_normalize_by_table_gives_the_bits_of_the_arithmetic(config):
    """Every uint8 value of every channel, and a random crop, against (x / 255 - mean) / std
    computed in float32 the plain way."""
    from polyvit.preprocessing import normalize

    cfg = get_config(config)
    rule = cfg.preprocessing
    rng = np.random.default_rng(0)
    pixels = np.concatenate([np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None],
                             rng.integers(0, 256, (1, 256, 3), dtype=np.uint8)])  # (2, 256, 3)
    want = (pixels.astype(np.float32) / 255.0 - np.asarray(rule.mean, np.float32)) \
        / np.asarray(rule.std, np.float32)
    got = normalize(pixels, cfg)
    assert got.shape == (3, 2, 256) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.moveaxis(want, -1, 0))
    with pytest.raises(ValueError, match="uint8"):
        normalize(pixels.astype(np.float32), cfg)
