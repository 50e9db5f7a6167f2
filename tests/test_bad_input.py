"""Bad input gets an exception whose message says what is wrong and what to do: checkpoints,
backends, image arrays and image files. (The CLI's one-line errors are in test_cli.py.)"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import polyvit
from polyvit.config import get_config
from polyvit.weights import expected_shapes, random_weights, save

CFG = get_config("vit_test")


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save(path, CFG, random_weights(CFG, seed=1))
    return path


# ---- checkpoints -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(polyvit.WeightsNotFoundError, match="no such file"):
        polyvit.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("kind", ["safetensors", "pth", "npz"])
def test_truncated_checkpoint(tmp_path, good_file, kind):
    weights = random_weights(CFG, seed=1)
    if kind == "safetensors":
        full = good_file.read_bytes()
    elif kind == "pth":
        buf = io.BytesIO()
        torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, buf)
        full = buf.getvalue()
    else:
        buf = io.BytesIO()
        np.savez(buf, **{"embedding/kernel": np.zeros((8, 8, 3, 48), np.float32)})
        full = buf.getvalue()
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(full[: len(full) * 2 // 3])
    with pytest.raises(polyvit.WeightsError, match="truncated|corrupt|damaged"):
        polyvit.load(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint at all\n", os.urandom(4096)],
                         ids=["empty", "text", "random"])
def test_file_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(polyvit.WeightsError):
        polyvit.load(path)


def test_missing_key_is_named(tmp_path):
    weights = random_weights(CFG, seed=1)
    del weights["blocks.1.mlp.fc2.bias"]
    path = tmp_path / "m.pth"
    torch.save({k: torch.from_numpy(v) for k, v in weights.items()}, path)
    with pytest.raises(polyvit.WeightsError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        polyvit.load(path, num_heads=3)


def test_wrong_shape_names_the_key_and_both_shapes():
    weights = random_weights(CFG, seed=1)
    weights["blocks.0.attn.proj.weight"] = np.zeros((48, 47), np.float32)
    with pytest.raises(polyvit.WeightsError,
                       match=r"blocks\.0\.attn\.proj\.weight has shape \(48, 47\).*\(48, 48\)"):
        polyvit.load(weights, config=CFG)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_name_the_tensor(tmp_path, bad):
    weights = random_weights(CFG, seed=1)
    weights["blocks.0.norm2.weight"][3] = bad
    path = tmp_path / "nan.safetensors"
    from safetensors.numpy import save_file

    save_file(weights, path, metadata={"format": "polyvit", "format_version": "1",
                                       "config": CFG.to_json()})
    with pytest.raises(polyvit.WeightsError, match=r"blocks\.0\.norm2\.weight.*non-finite"):
        polyvit.load(path)


def test_unexpected_keys_are_named():
    weights = random_weights(CFG, seed=1)
    weights["dist_token"] = np.zeros((1, 1, 48), np.float32)
    with pytest.raises(polyvit.WeightsError, match="dist_token"):
        polyvit.load(weights, config=CFG)


def test_pickle_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(polyvit.WeightsError, match="not a dict"):
        polyvit.load(path)
    path2 = tmp_path / "strings.pth"
    torch.save({"a": "b", "epoch": 3}, path2)
    with pytest.raises(polyvit.WeightsError, match="no floating-point tensors|unrecognised"):
        polyvit.load(path2)


class RunsCode:
    """A pickle payload that would create a file if unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipped", [True, False], ids=["torch_zip", "plain_pickle"])
def test_a_checkpoint_can_never_run_code(tmp_path, zipped):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model_state_dict": RunsCode(marker)}
    if zipped:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(polyvit.WeightsError, match="refused to unpickle"):
        polyvit.load(path)
    assert not marker.exists()


def test_polyvit_file_of_a_future_version(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "v9.safetensors"
    save_file(random_weights(CFG, seed=1), path,
              metadata={"format": "polyvit", "format_version": "9", "config": CFG.to_json()})
    with pytest.raises(polyvit.WeightsError, match="format_version"):
        polyvit.load(path)


def test_unknown_safetensors_layout(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"encoder.conv1.weight": np.zeros((4, 4), np.float32)}, path)
    with pytest.raises(polyvit.WeightsError, match="unrecognised checkpoint layout"):
        polyvit.load(path)


def test_folder_without_config(tmp_path):
    with pytest.raises(polyvit.WeightsError, match="config.json"):
        polyvit.load(tmp_path)


# ---- backends (options and precisions: tests/test_backend_contract.py) ----------------------------------------------------------------------

def test_unknown_backend_lists_the_registered_ones():
    with pytest.raises(polyvit.BackendError, match=r"unknown backend 'tensorflow'.*torch"):
        polyvit.load(backend="tensorflow", config="vit_test")


def test_config_with_a_checkpoint_is_refused(good_file):
    with pytest.raises(polyvit.ConfigError, match="carries its own config"):
        polyvit.load(good_file, config="vit_test")


def test_available_backends_imports_nothing_heavy():
    code = ("import sys, polyvit; r = polyvit.available_backends(); "
            "assert r['torch'][0] is True, r; "
            "heavy = [m for m in ('torch', 'transformers', 'dpctl') if m in sys.modules]; "
            "assert not heavy, heavy")
    # as a user's shell runs it: without the interpreter switch the tests set for triton
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---- image arrays ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    return polyvit.load(config="vit_test")


@pytest.mark.parametrize("images,error,match", [
    (np.zeros((1, 3, 16, 16), np.float32), ValueError, r"shape \(1, 3, 16, 16\).*\(B, 3, 32, 32\)"),
    (np.zeros((1, 1, 32, 32), np.float32), ValueError, "expected"),
    (np.zeros((2, 32, 32, 3), np.float32), ValueError, "preprocess"),
    (np.zeros((3, 32, 32), np.float32), ValueError, "without a batch axis"),
    (np.zeros((0, 3, 32, 32), np.float32), ValueError, "empty batch"),
    (np.zeros((1, 3, 32, 32), np.float64), TypeError, "float64.*astype"),
    (np.zeros((1, 3, 32, 32), np.uint8), TypeError, "uint8"),
    (np.zeros((1, 3, 32, 64), np.float32)[:, :, :, ::2], ValueError, "contiguous"),
    ([[0.0]], TypeError, "numpy array"),
], ids=["small", "channels", "nhwc", "no_batch", "empty", "float64", "uint8", "strided", "list"])
def test_bad_image_arrays(tiny_model, images, error, match):
    with pytest.raises(error, match=match):
        tiny_model(images)


def test_cpu_tensor_passes_without_a_copy(tiny_model):
    x = torch.zeros(2, 3, 32, 32)
    assert tiny_model(x).shape == (2, 10)


# ---- image files --------------------------------------------------------------------------------

def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("just text")
    with pytest.raises(polyvit.ImageError, match="not an image"):
        polyvit.preprocess(path, CFG)


def test_missing_image(tmp_path):
    with pytest.raises(polyvit.ImageError, match="no such file"):
        polyvit.preprocess(tmp_path / "gone.png", CFG)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tmp_path, fmt):
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(polyvit.ImageError, match="truncated|corrupt"):
        polyvit.preprocess(path, CFG)


def png_claiming(width: int, height: int) -> bytes:
    """A valid, tiny PNG whose header claims width x height grey pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width,height", [(12_000, 10_000), (100_000, 100_000)],
                         ids=["over_the_limit", "far_over"])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(width, height))
    assert path.stat().st_size < 200
    with pytest.raises(polyvit.ImageError, match="decompression bomb"):
        polyvit.preprocess(path, CFG)


def test_pixel_limit_is_adjustable(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(polyvit.ImageError, match="decompression bomb"):
        polyvit.preprocess(path, CFG, max_pixels=50_000)
    assert polyvit.preprocess(path, CFG, max_pixels=100_000).shape == (3, 32, 32)


def test_expected_shapes_cover_every_weight_exactly_once():
    shapes = expected_shapes(get_config("vit_small_patch32_224"))
    assert sum(int(np.prod(s)) for s in shapes.values()) == 22_878_952
