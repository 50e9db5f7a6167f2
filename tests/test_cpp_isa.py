"""Each kernel set of the C++ backend (AVX-512, AVX2, portable) that this CPU can run, forced
with isa=: the op-level rule on every op shape of tests/test_ops.py, and end-to-end parity.
The shared matrix (tests/test_ops.py, tests/test_parity.py) covers only the set isa='auto'
picks; bf16 and int8 run only with the avx512 set, so they are covered there."""

from __future__ import annotations

import numpy as np
import pytest

import polyvit
from polyvit import BackendError, parity
from polyvit.backends.torch_backend import TorchBackend
from polyvit.config import get_config
from polyvit.weights import random_weights

_cpu = pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")
from polyvit.backends.cpp_backend import CppBackend  # noqa: E402
from test_ops import (ATTENTION_SHAPES, EPILOGUES, LAYERNORM_SHAPES, LINEAR_SHAPES,  # noqa: E402
                      PATCH_SHAPES, rand)

ISAS = ["avx512", "avx2", "generic"]
ORACLE, TORCH32 = TorchBackend.ops("fp64"), TorchBackend.ops("fp32")


@pytest.fixture(params=ISAS)
def isa(request):
    if request.param not in _cpu.isas().split():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    return request.param


def check(isa, op, *args):
    as64 = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    oracle = getattr(ORACLE, op)(*as64)
    tol = parity.tolerance(getattr(TORCH32, op)(*args), oracle)
    out = getattr(CppBackend.ops("fp32", isa=isa, threads=2), op)(*args)
    err = float(np.max(np.abs(out.astype(np.float64) - oracle)))
    assert out.shape == oracle.shape and err <= tol, f"{isa} {op}: max|d| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_linear(isa, m, k, n, epilogue):
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
    residual = rand(rng, m, n) if epilogue == "residual" else None
    check(isa, "linear", x, w, b, epilogue, residual)


@pytest.mark.parametrize("m,c", LAYERNORM_SHAPES, ids=str)
def test_layernorm(isa, m, c):
    rng = np.random.default_rng(m + c)
    x = rand(rng, m, c, scale=3.0) + 10.0
    check(isa, "layernorm", x, 1 + rand(rng, c, scale=0.1), rand(rng, c, scale=0.1), 1e-6)


@pytest.mark.parametrize("b,t,d,h", ATTENTION_SHAPES + [(1, 33, 24, 3), (2, 7, 40, 5)], ids=str)
def test_attention(isa, b, t, d, h):
    rng = np.random.default_rng(b * t + d)
    check(isa, "attention", rand(rng, b, t, 3 * d, scale=2.0), h)


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_bias_gelu(isa, form):
    rng = np.random.default_rng(9)
    check(isa, "bias_gelu", rand(rng, 37, 203, scale=3.0), rand(rng, 203), form)


@pytest.mark.parametrize("b,c,s,p,d", PATCH_SHAPES, ids=str)
def test_patch_embed(isa, b, c, s, p, d):
    rng = np.random.default_rng(b + s + d)
    check(isa, "patch_embed", rand(rng, b, c, s, s),
          rand(rng, d, c, p, p, scale=(c * p * p) ** -0.5), rand(rng, d, scale=0.1))


# odd sizes everywhere (D 45, head dim 9, MLP 99, 26 tokens): every tail path of every kernel
ODD = get_config("vit_test").replace(name="vit_test_odd", embed_dim=45, num_heads=5, mlp_dim=99,
                                     image_size=40)
CONFIGS = {"vit_test": get_config("vit_test"), "vit_test_odd": ODD,
           "vit_small_patch32_224": get_config("vit_small_patch32_224")}


@pytest.mark.parametrize("name", CONFIGS)
def test_forward(isa, name):
    cfg = CONFIGS[name]
    weights = random_weights(cfg, seed=2)
    images = parity.random_images(cfg, 2, seed=3)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    model = polyvit.load(weights, backend="cpp", config=cfg, isa=isa)
    assert model.impl.isa == isa
    result = parity.compare(model(images), oracle, tol)
    assert result.passed, f"{isa} {name}: {result.describe()}"


def test_auto_picks_the_best_set_this_cpu_runs():
    assert polyvit.load(config="vit_test", backend="cpp").impl.isa == _cpu.isas().split()[0]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precisions_need_the_avx512_set(precision):
    for isa in ("avx2", "generic"):
        ok, why = CppBackend.supports(precision, isa=isa)
        assert not ok and ("avx512" in why or precision in why)
        with pytest.raises(BackendError):
            CppBackend.ops(precision, isa=isa)


def test_an_isa_this_cpu_lacks_or_an_unknown_one_is_refused(monkeypatch):
    with pytest.raises(BackendError, match="isa='sse9' is not accepted; isa takes one of"):
        polyvit.load(config="vit_test", backend="cpp", isa="sse9")
    monkeypatch.setattr(_cpu, "isas", lambda: "generic")
    with pytest.raises(BackendError, match="runs only generic"):
        polyvit.load(config="vit_test", backend="cpp", isa="avx2")
