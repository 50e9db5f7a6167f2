"""Bad input at the C++ backend's native boundary (polyvit._cpu called directly, past the Python
checks): every mistake is a clear TypeError / ValueError / BackendError naming what to pass
instead, never a crash or a silent copy. The weights cross it by name: each tensor is checked
where the model takes it, and one it never takes is an error."""

from __future__ import annotations

import numpy as np
import pytest

import polyvit
from polyvit import BackendError
from polyvit.backends._native import BATCH_SIZES_KEPT, config_fields
from polyvit.config import get_config
from polyvit.weights import random_weights

_cpu = pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")

CFG = get_config("vit_test")
WEIGHTS = random_weights(CFG, seed=3)


def model(weights=WEIGHTS, config=None, precision="fp32", isa="auto"):
    return _cpu.Model(config or config_fields(CFG), weights, precision, 2, isa, BATCH_SIZES_KEPT)


@pytest.fixture(scope="module")
def native():
    return model()


def images(batch=2):
    return np.zeros((batch, CFG.in_chans, CFG.image_size, CFG.image_size), np.float32)


# ---- forward ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad,error,words", [
    (images().astype(np.float64), TypeError, "float32"),
    (images().astype(np.float16), TypeError, "float32"),
    (images().astype(">f4"), TypeError, "float32"),
    (images().tolist(), TypeError, "numpy array"),
    (images()[:, :, :, ::2], ValueError, "shape"),
    (np.asfortranarray(images()), ValueError, "C-contiguous"),
    (images().transpose(0, 1, 3, 2), ValueError, "C-contiguous"),
    (images()[0], ValueError, "shape"),
    (images(0), ValueError, "empty batch"),
    (np.zeros((2, 1, 32, 32), np.float32), ValueError, "shape"),
])
def test_native_forward_rejects(native, bad, error, words):
    with pytest.raises(error, match=words):
        native.forward(bad)


def test_native_forward_reads_views_and_readonly_arrays_in_place(native):
    batch = np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    full = native.forward(batch)
    view = batch[1:3]  # a contiguous view: no copy needed, none made
    readonly = batch.copy()
    readonly.setflags(write=False)
    np.testing.assert_array_equal(native.forward(view), full[1:3])
    np.testing.assert_array_equal(native.forward(readonly), full)


@pytest.mark.parametrize("bad,error", [
    (lambda x: x.astype(np.float64), TypeError),
    (lambda x: np.asfortranarray(x), ValueError),
    (lambda x: x[:0], ValueError),
    (lambda x: x[:, :2], ValueError),
    (lambda x: x[0], ValueError),
])
def test_model_call_rejects(bad, error):
    model = polyvit.load(WEIGHTS, backend="cpp", config=CFG)
    with pytest.raises(error):
        model(bad(images(3)))


def test_nan_input_gives_nan_logits_not_a_crash(native):
    x = images(1)
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(native.forward(x)).any()


# ---- load: weights by name ---------------------------------------------------------------------

def test_native_load_rejects_a_missing_tensor():
    w = dict(WEIGHTS)
    del w["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"no tensor 'blocks.1.mlp.fc2.bias' \(shape \(48,\)\)"):
        model(w)


def test_native_load_rejects_an_extra_tensor():
    w = dict(WEIGHTS, stray=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="does not use: 'stray'; remove"):
        model(w)


def test_native_load_rejects_a_qkv_bias_the_config_lacks():
    cfg = CFG.replace(qkv_bias=False)
    with pytest.raises(ValueError, match="'blocks.0.attn.qkv.bias', 'blocks.1.attn.qkv.bias'"):
        model(config=config_fields(cfg))
    model({k: v for k, v in WEIGHTS.items() if "qkv.bias" not in k}, config_fields(cfg))


@pytest.mark.parametrize("fix,error,words", [
    (lambda a: a.T, ValueError, "C-contiguous"),
    (lambda a: a[:-1], ValueError,
     r"weights\['blocks.0.attn.qkv.weight'\] has shape \(143, 48\), expected \(144, 48\)"),
    (lambda a: np.ascontiguousarray(a[:, :, None]), ValueError, "expected \\(144, 48\\)"),
    (lambda a: a.astype(np.float64), TypeError, "float32"),
    (lambda a: np.asfortranarray(a), ValueError, "C-contiguous"),
    (lambda a: a.tolist(), TypeError, "numpy array"),
])
def test_native_load_checks_each_tensor(fix, error, words):
    w = dict(WEIGHTS)
    w["blocks.0.attn.qkv.weight"] = fix(w["blocks.0.attn.qkv.weight"])
    with pytest.raises(error, match=words):
        model(w)


def test_native_load_rejects_a_key_that_is_not_a_name():
    with pytest.raises(TypeError, match="str"):
        model({**WEIGHTS, 3: np.zeros(3, np.float32)})


@pytest.mark.parametrize("field,value,error", [
    ("num_heads", 5, ValueError), ("embed_dim", 0, ValueError), ("gelu", "relu", ValueError),
    ("qkv_bias", 1, TypeError), ("ln_eps", -1.0, ValueError),
])
def test_native_load_checks_the_config(field, value, error):
    with pytest.raises(error):
        model(config=dict(config_fields(CFG), **{field: value}))


def test_native_load_checks_threads_and_the_cache_size():
    with pytest.raises(ValueError, match="threads"):
        _cpu.Model(config_fields(CFG), WEIGHTS, "fp32", 0, "auto", BATCH_SIZES_KEPT)
    with pytest.raises(ValueError, match="batch_sizes_kept"):
        _cpu.Model(config_fields(CFG), WEIGHTS, "fp32", 1, "auto", 0)


def test_native_unsupported_precision_or_isa_is_a_backend_error():
    with pytest.raises(BackendError, match="fp16"):
        model(precision="fp16")
    with pytest.raises(BackendError, match="isa"):
        model(isa="neon")
    if "avx2" in _cpu.isas().split() and _cpu.cpu_has("avx512_bf16"):  # bf16 needs avx512
        with pytest.raises(BackendError, match="avx512"):
            model(precision="bf16", isa="avx2")


def test_a_cpu_without_the_dot_product_gets_a_backend_error(monkeypatch):
    """What a CPU lacking AVX512_BF16 sees (simulated by hiding the feature). int8 needs no
    feature: without AVX512_VNNI it runs the AVX2 or portable tiles (tests/test_cpp_isa.py)."""
    monkeypatch.setattr(_cpu, "cpu_has", lambda f: f != "avx512_bf16")
    with pytest.raises(BackendError, match="AVX512_BF16"):
        polyvit.load(WEIGHTS, backend="cpp", config=CFG, precision="bf16")
    with pytest.raises(BackendError, match="AVX512_BF16"):
        polyvit.backends.backend_class("cpp").ops("bf16")
    monkeypatch.setattr(_cpu, "cpu_has", lambda f: f != "avx512_vnni")
    assert polyvit.backends.backend_class("cpp").supports("int8") == (True, "")


# ---- single ops ---------------------------------------------------------------------------------

def f32(*shape):
    return np.ones(shape, np.float32)


@pytest.mark.parametrize("call,error,words", [
    (lambda: _cpu.linear(f32(4, 8), f32(3, 7), f32(3)), ValueError, "weight has shape"),
    (lambda: _cpu.linear(f32(4, 8), f32(3, 8), f32(4)), ValueError, "bias has shape"),
    (lambda: _cpu.linear(f32(4, 8).astype(np.float64), f32(3, 8), None), TypeError, "float32"),
    (lambda: _cpu.linear(f32(8, 4).T, f32(3, 8), None), ValueError, "C-contiguous"),
    (lambda: _cpu.linear(f32(0, 8), f32(3, 8), None), ValueError, "empty"),
    (lambda: _cpu.linear(f32(4, 8), f32(3, 8), None, "residual"), ValueError, "residual"),
    (lambda: _cpu.linear(f32(4, 8), f32(3, 8), None, "residual", f32(4, 4)), ValueError, "shape"),
    (lambda: _cpu.linear(f32(4, 8), f32(3, 8), None, "relu"), ValueError, "epilogue"),
    (lambda: _cpu.layernorm(f32(4, 8), f32(7), f32(8), 1e-6), ValueError, "weight has shape"),
    (lambda: _cpu.layernorm(f32(4, 8), f32(8), f32(8), 0.0), ValueError, "eps"),
    (lambda: _cpu.attention(f32(2, 5, 10), 1), ValueError, "3 \\* D"),
    (lambda: _cpu.attention(f32(2, 5, 12), 3), ValueError, "num_heads"),
    (lambda: _cpu.attention(f32(2, 0, 12), 1), ValueError, "empty"),
    (lambda: _cpu.attention(f32(10, 12), 1), ValueError, "shape"),
    (lambda: _cpu.bias_gelu(f32(4, 8), f32(8), "relu"), ValueError, "form"),
    (lambda: _cpu.bias_gelu(f32(4, 8), f32(4, 8)), ValueError, "bias has shape"),
    (lambda: _cpu.patch_embed(f32(2, 3, 8, 8), f32(5, 2, 4, 4), f32(5)), ValueError,
     "weight has shape"),
    (lambda: _cpu.patch_embed(f32(2, 3, 8, 8), f32(5, 3, 3, 3), f32(5)), ValueError, "tile"),
    (lambda: _cpu.patch_embed(f32(2, 3, 8, 8), f32(5, 3, 4, 2), f32(5)), ValueError, "square"),
    (lambda: _cpu.patch_embed(f32(2, 3, 8, 8), f32(5, 3, 4, 4), f32(4)), ValueError,
     "bias has shape"),
    (lambda: _cpu.patch_embed(f32(3, 8, 8), f32(5, 3, 4, 4), f32(5)), ValueError, "shape"),
    (lambda: _cpu.linear(f32(4, 8), f32(3, 8), None, precision="fp16"), BackendError, "fp16"),
    (lambda: _cpu.attention(f32(2, 5, 12), 1, isa="neon"), BackendError, "isa"),
])
def test_native_ops_reject(call, error, words):
    with pytest.raises(error, match=words):
        call()
