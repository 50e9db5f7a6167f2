"""Other image sizes: the position embedding resampled bicubically, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.resize import at_image_size, resample_pos_embed
from polyvit.weights import random_weights

from scripts import assert_one_line_error

TEST = get_config("vit_test")  # 32 px, patch 8: a 4 x 4 grid


def cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.75, as torch's bicubic)."""
    t = np.abs(t)
    return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                    np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))


def upsample_1d(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bicubic interpolation matrix, half-pixel centres, edges clamped."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(x))
        for k in range(base - 1, base + 3):
            m[i, min(max(k, 0), n_in - 1)] += cubic(x - k)
    return m


def test_upsampling_is_separable_bicubic_and_keeps_the_class_token():
    """Against an independent numpy bicubic: rows, then columns, of every channel."""
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1, 1 + 7 * 7, 5)).astype(np.float32)
    out = resample_pos_embed(pos, 12)
    assert out.shape == (1, 1 + 144, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], pos[0, 0])
    m = upsample_1d(7, 12)
    grid = pos[0, 1:].reshape(7, 7, 5).astype(np.float64)
    want = np.einsum("ai,bj,ijc->abc", m, m, grid).reshape(144, 5)
    np.testing.assert_allclose(out[0, 1:], want, atol=1e-5)


def test_shrinking_antialiases_and_the_same_size_is_unchanged():
    pos = np.zeros((1, 1 + 8 * 8, 3), np.float32)
    pos[0, 1:] = np.where(np.arange(64) % 2, 1.0, -1.0)[:, None]  # columns alternate +-1
    small = resample_pos_embed(pos, 4)
    assert np.abs(small[0, 1:]).max() < 0.2  # a stripe pattern at the new Nyquist averages out
    np.testing.assert_array_equal(resample_pos_embed(pos, 8), pos)


def test_a_checkpoint_runs_at_another_size_on_every_backend(backend_fp32):
    """load(W, image_size=48) on each backend against the float64 reference of the resampled
    weights (6 x 6 grid, 37 tokens)."""
    name, precision = backend_fp32
    weights = random_weights(TEST, seed=4)
    model = polyvit.load(weights, backend=name, precision=precision, config=TEST, image_size=48)
    assert model.config.image_size == 48 and model.config.num_tokens == 37
    cfg, resampled = at_image_size(TEST, weights, 48)
    images = parity.random_images(cfg, 2, seed=5)
    oracle, tol = parity.reference_outputs(cfg, resampled, images)
    result = parity.compare(model(images), oracle, tol)
    assert result.passed, f"{name}: {result.describe()}"


def test_preprocessing_follows_the_new_size():
    model = polyvit.load(None, config="vit_test", image_size=64)
    x = polyvit.preprocess(polyvit.labels.sample_image_path(), model.config)
    assert x.shape == (3, 64, 64) and model(x[None]).shape == (1, 10)


@pytest.mark.parametrize("size,message", [(50, "not a multiple of the patch size 8 of vit_test; "
                                                "use 48 or 56"), (0, "positive integer")])
def test_a_size_that_is_not_a_multiple_of_the_patch_is_refused(size, message):
    with pytest.raises(polyvit.ConfigError, match=message):
        polyvit.load(None, config="vit_test", image_size=size)


def test_a_pos_embed_that_is_not_a_square_grid_cannot_be_resampled():
    with pytest.raises(polyvit.WeightsError, match="not a square grid"):
        resample_pos_embed(np.zeros((1, 1 + 12, 4), np.float32), 5)


def test_vit_run_takes_an_image_size():
    assert_one_line_error("vit-run", ["--config", "vit_test", "--image-size", "33"],
                          "not a multiple of the patch size 8")
