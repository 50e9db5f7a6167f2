"""Op-level parity: each backend's single ops against the float64 reference ops, by the same
rule as the end-to-end suite (bound = 2 x torch fp32's error + floor), on ViT shapes and on
shapes with tails (M, N, K not multiples of any tile)."""

from __future__ import annotations

import numpy as np
import pytest

from polyvit import backends, parity
from polyvit.backends.torch_backend import TorchOps

REF = TorchOps()

# (M, K, N): ViT-S/32 qkv, proj, fc1, fc2 at batch 1, ViT-Ti/16 qkv, then tails and tiny cases
LINEAR_SHAPES = [(50, 384, 1152), (50, 384, 384), (50, 384, 1536), (50, 1536, 384),
                 (197, 192, 576), (49, 3072, 384), (17, 48, 144), (33, 100, 37), (1, 7, 5),
                 (5, 1, 3), (64, 64, 64)]
EPILOGUES = ["none", "gelu_erf", "gelu_tanh", "residual"]
# (B, T, D, heads)
ATTENTION_SHAPES = [(2, 50, 384, 6), (1, 197, 192, 3), (3, 17, 48, 3), (2, 5, 16, 1),
                    (1, 1, 64, 1), (1, 65, 128, 2)]
LAYERNORM_SHAPES = [(50, 384), (49, 3072), (7, 5), (1, 1), (197, 192)]


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def check(backend: str, op: str, *args, **kwargs):
    """Run op on the backend in fp32 and the reference in fp32 and float64; apply the rule."""
    ops = backends.backend_class(backend).ops()
    as64 = [a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args]
    oracle = getattr(REF, op)(*as64, **kwargs)
    tol = parity.tolerance(getattr(REF, op)(*args, **kwargs), oracle)
    out = getattr(ops, op)(*args, **kwargs)
    assert out.shape == oracle.shape, f"{op}: shape {out.shape}, expected {oracle.shape}"
    assert out.dtype == np.float32, f"{op}: dtype {out.dtype}, expected float32"
    err = float(np.max(np.abs(out.astype(np.float64) - oracle)))
    assert err <= tol, f"{backend} {op} {[getattr(a, 'shape', a) for a in args]}: " \
                       f"max|d| {err:.3g} > bound {tol:.3g}"


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_linear(backend_name, m, k, n, epilogue):
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x, w = rand(rng, m, k), rand(rng, n, k, scale=1 / np.sqrt(k))
    b = rand(rng, n, scale=0.1)
    residual = rand(rng, m, n) if epilogue == "residual" else None
    check(backend_name, "linear", x, w, b, epilogue=epilogue, residual=residual)


@pytest.mark.parametrize("m,k,n", [(50, 384, 1152), (33, 100, 37)], ids=lambda v: str(v))
def test_linear_without_bias(backend_name, m, k, n):
    """qkv without bias (the seed checkpoint)."""
    rng = np.random.default_rng(5)
    check(backend_name, "linear", rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), None)


@pytest.mark.parametrize("m,c", LAYERNORM_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 1e-12])
def test_layernorm(backend_name, m, c, eps):
    rng = np.random.default_rng(m + c)
    # an offset mean and a large scale: catches one-pass variance formulas that cancel badly
    x = rand(rng, m, c, scale=3.0) + 10.0
    check(backend_name, "layernorm", x, 1 + rand(rng, c, scale=0.1), rand(rng, c, scale=0.1), eps)


@pytest.mark.parametrize("b,t,d,h", ATTENTION_SHAPES, ids=lambda v: str(v))
def test_attention(backend_name, b, t, d, h):
    rng = np.random.default_rng(b * t + d)
    # scale 2: scores of a few units, peaked softmax as in trained models
    check(backend_name, "attention", rand(rng, b, t, 3 * d, scale=2.0), h)


@pytest.mark.parametrize("m,n", [(50, 1536), (197, 768), (3, 7)], ids=lambda v: str(v))
@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_bias_gelu(backend_name, m, n, form):
    rng = np.random.default_rng(m + n)
    check(backend_name, "bias_gelu", rand(rng, m, n, scale=3.0), rand(rng, n), form=form)
