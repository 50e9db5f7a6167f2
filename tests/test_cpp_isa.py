"""Each kernel set of the C++ backend (AVX-512, AVX2, portable) that this CPU can run, forced
with isa=: the op-level rule on every op shape of tests/test_ops.py, and end-to-end parity.
The shared matrix (tests/test_ops.py, tests/test_parity.py) covers only the set isa='auto'
picks. bf16 runs only with the avx512 set, so it is covered there; int8 runs with every set
(vpdpbusd, its exact AVX2 equivalent, portable C++), each checked here by the same rules, and
the sets' int32 sums and scaling are the same, so bias and residual outputs are equal bit for
bit across them."""

from __future__ import annotations

import numpy as np
import pytest

import polyvit
from polyvit import BackendError, parity
from polyvit.backends.torch_backend import TorchBackend
from polyvit.config import ViTConfig, get_config
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


def test_bf16_needs_the_avx512_set():
    for isa in ("avx2", "generic"):
        ok, why = CppBackend.supports("bf16", isa=isa)
        assert not ok and ("avx512" in why or "bf16" in why)
        with pytest.raises(BackendError):
            CppBackend.ops("bf16", isa=isa)


# ---- int8 on every kernel set --------------------------------------------------------------------

def int8_linear(isa, m, k, n, epilogue):
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
    residual = rand(rng, m, n) if epilogue == "residual" else None
    args = (x, w, b, epilogue, residual)
    return args, CppBackend.ops("int8", isa=isa, threads=2).linear(*args)


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
def test_int8_linear(isa, m, k, n):
    """tests/test_ops.py's rule for reduced precisions (parity.reduced_op_bound plus the fp32
    bound), every epilogue."""
    for epilogue in EPILOGUES:
        args, out = int8_linear(isa, m, k, n, epilogue)
        oracle = ORACLE.linear(*[a.astype(np.float64) if isinstance(a, np.ndarray) else a
                                 for a in args])
        bound = (parity.reduced_op_bound("linear", "int8", args, oracle)
                 + parity.tolerance(TORCH32.linear(*args), oracle))
        err = np.abs(out.astype(np.float64) - oracle)
        assert out.shape == oracle.shape and np.all(err <= bound), (
            f"{isa} int8 {epilogue}: max excess {np.max(err - bound):.3g}")


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("epilogue", ["none", "residual"])
def test_int8_linear_is_the_same_on_every_set(m, k, n, epilogue):
    """Quantisation, int32 sums and the scaling float ops are the same in every set, so the
    outputs are equal bit for bit. (GELU epilogues differ by an ulp or two: each set's fp32
    reciprocal is its own, rcp14 / rcp + a Newton step / a division.)"""
    isas = _cpu.isas().split()
    outs = {isa: int8_linear(isa, m, k, n, epilogue)[1] for isa in isas}
    for isa in isas[1:]:
        np.testing.assert_array_equal(outs[isa], outs[isas[0]], err_msg=f"{isa} vs {isas[0]}")


def test_int8_sums_are_exact_at_full_range(isa):
    """Activations that quantise to 255 against weights that quantise to +-127: every pair of
    products is 64770, which vpmaddubsw would saturate to 32767. The sums must be exact."""
    rng = np.random.default_rng(4)
    x = (rng.random((9, 200)) < 0.9).astype(np.float32)          # 0 and 1: u8 0 and 255
    x[:, 0] = 1.0
    w = np.where(rng.random((21, 200)) < 0.9, 1.0, -1.0).astype(np.float32)  # s8 +-127
    w[1::2] = 1.0  # odd rows: all positive, the largest sums
    out = CppBackend.ops("int8", isa=isa, threads=2).linear(x, w, None, "none", None)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w.T, rtol=1e-6, atol=1e-4)


INT8_CASES = {"odd_sizes": ODD, "vit_small_patch32_224": get_config("vit_small_patch32_224")}


@pytest.mark.parametrize("name", INT8_CASES)
def test_int8_forward_agrees_with_fp32(isa, name):
    """tests/test_parity.py's int8 rule (parity.REDUCED) against fp32 logits, with the int8
    kernels the set implies: avx512 runs vpdpbusd when the CPU has AVX512_VNNI, else the AVX2
    tiles."""
    cfg: ViTConfig = INT8_CASES[name]
    if isa != "avx2" and cfg.depth > 2:  # ~4 s each; odd_sizes runs the same code, every tail
        pytest.skip({"avx512": "tests/test_parity.py runs ViT-S/32 int8 with isa='auto'",
                     "generic": "the portable int8 tiles take 10-20 s for 64 images of "
                                "ViT-S/32"}[isa])
    weights = random_weights(cfg, seed=1)
    images = parity.random_images(cfg, 64, seed=101)
    fp32 = polyvit.load(weights, backend="cpp", config=cfg)(images)
    model = polyvit.load(weights, backend="cpp", config=cfg, precision="int8", isa=isa)
    vnni = _cpu.cpu_has("avx512_vnni")
    assert model.impl.isa == isa
    assert model.impl.int8_isa == {"avx512": "avx512_vnni" if vnni else "avx2"}.get(isa, isa)
    budget = parity.REDUCED["int8"]
    found = parity.agreement(model(images), fp32, budget.error_std)
    assert found.passes(budget), found.summary(f"cpp int8 isa={isa} {name}")


def test_int8_runs_on_every_set_and_auto_picks_the_best():
    assert CppBackend.supports("int8", isa="generic") == (True, "")
    model = polyvit.load(config="vit_test", backend="cpp", precision="int8")
    best = _cpu.isas().split()[0]
    vnni = _cpu.cpu_has("avx512_vnni")
    assert model.impl.int8_isa == {"avx512": "avx512_vnni" if vnni else "avx2"}.get(best, best)
    assert polyvit.load(config="vit_test", backend="cpp").impl.int8_isa is None


def test_an_isa_this_cpu_lacks_or_an_unknown_one_is_refused(monkeypatch):
    with pytest.raises(BackendError, match="isa='sse9' is not accepted; isa takes one of"):
        polyvit.load(config="vit_test", backend="cpp", isa="sse9")
    monkeypatch.setattr(_cpu, "isas", lambda: "generic")
    with pytest.raises(BackendError, match="runs only generic"):
        polyvit.load(config="vit_test", backend="cpp", isa="avx2")
