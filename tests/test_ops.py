"""Op-level parity: every native backend x every precision it offers x every op x shapes with
tails (M, N, K not multiples of any tile), against the float64 reference ops.

fp32 is held to the derived rule of the end-to-end suite (bound = 2 x torch fp32's error +
floor). bf16, fp16 and int8 are held, element by element, to parity.reduced_op_bound: what
rounding the inputs and the result to the precision can do at most, plus the fp32 bound for the
accumulation. One rule for every backend; `pytest --collect-only -q tests/test_ops.py` lists the
matrix.
"""

from __future__ import annotations

import numpy as np
import pytest

from polyvit import backends, parity
from polyvit.backends.torch_backend import TorchBackend, TorchOps

ORACLE = TorchBackend.ops("fp64")
TORCH32 = TorchBackend.ops("fp32")

# (M, K, N): ViT-S/32 qkv, proj, fc1, fc2 at batch 1, ViT-Ti/16 qkv, then tails and tiny cases
LINEAR_SHAPES = [(50, 384, 1152), (50, 384, 384), (50, 384, 1536), (50, 1536, 384),
                 (197, 192, 576), (49, 3072, 384), (17, 48, 144), (33, 100, 37), (1, 7, 5),
                 (5, 1, 3), (64, 64, 64)]
EPILOGUES = ["none", "gelu_erf", "gelu_tanh", "residual"]
# (B, T, D, heads)
ATTENTION_SHAPES = [(2, 50, 384, 6), (1, 197, 192, 3), (3, 17, 48, 3), (2, 5, 16, 1),
                    (1, 1, 64, 1), (1, 65, 128, 2)]
LAYERNORM_SHAPES = [(50, 384), (49, 3072), (7, 5), (1, 1), (197, 192)]
# (B, C, image, patch, D): ViT-S/32, ViT-Ti/16, a tiny odd one
PATCH_SHAPES = [(2, 3, 224, 32, 384), (1, 3, 224, 16, 192), (3, 2, 12, 3, 7)]


def rand(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def check(pair: tuple[str, str], op: str, *args):
    """Run op on the backend in its precision, and the reference in fp32 and float64; apply the
    precision's rule."""
    name, precision = pair
    ops = backends.backend_class(name).ops(precision)
    as64 = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
    oracle = getattr(ORACLE, op)(*as64)
    tol = parity.tolerance(getattr(TORCH32, op)(*args), oracle)
    out = getattr(ops, op)(*args)
    assert out.shape == oracle.shape, f"{op}: shape {out.shape}, expected {oracle.shape}"
    assert out.dtype == np.float32, f"{op}: dtype {out.dtype}, expected float32"
    err = np.abs(out.astype(np.float64) - oracle)
    where = f"{name} {precision} {op} {[getattr(a, 'shape', a) for a in args]}"
    if precision == "fp32":
        assert err.max() <= tol, f"{where}: max|d| {err.max():.3g} > bound {tol:.3g}"
    else:
        bound = parity.reduced_op_bound(op, precision, args, oracle) + tol
        worst = np.unravel_index(np.argmax(err - bound), err.shape)
        assert np.all(err <= bound), (f"{where}: |d| {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                      f"at {worst}")


@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=str)
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_linear(backend_precision, m, k, n, epilogue):
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x, w = rand(rng, m, k), rand(rng, n, k, scale=1 / np.sqrt(k))
    b = rand(rng, n, scale=0.1)
    residual = rand(rng, m, n) if epilogue == "residual" else None
    check(backend_precision, "linear", x, w, b, epilogue, residual)


@pytest.mark.parametrize("m,k,n", [(50, 384, 1152), (33, 100, 37)], ids=str)
def test_linear_without_bias(backend_precision, m, k, n):
    """qkv without bias (the seed checkpoint)."""
    rng = np.random.default_rng(5)
    check(backend_precision, "linear", rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), None,
          "none", None)


@pytest.mark.parametrize("m,c", LAYERNORM_SHAPES, ids=str)
@pytest.mark.parametrize("eps", [1e-6, 1e-5, 1e-12])
def test_layernorm(backend_precision, m, c, eps):
    rng = np.random.default_rng(m + c)
    # an offset mean and a large scale: catches one-pass variance formulas that cancel badly
    x = rand(rng, m, c, scale=3.0) + 10.0
    check(backend_precision, "layernorm", x, 1 + rand(rng, c, scale=0.1),
          rand(rng, c, scale=0.1), eps)


@pytest.mark.parametrize("b,t,d,h", ATTENTION_SHAPES, ids=str)
def test_attention(backend_precision, b, t, d, h):
    rng = np.random.default_rng(b * t + d)
    # scale 2: scores of a few units, peaked softmax as in trained models
    check(backend_precision, "attention", rand(rng, b, t, 3 * d, scale=2.0), h)


@pytest.mark.parametrize("m,n", [(50, 1536), (197, 768), (3, 7)], ids=str)
@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_bias_gelu(backend_precision, m, n, form):
    rng = np.random.default_rng(m + n)
    check(backend_precision, "bias_gelu", rand(rng, m, n, scale=3.0), rand(rng, n), form)


@pytest.mark.parametrize("b,c,s,p,d", PATCH_SHAPES, ids=str)
def test_patch_embed(backend_precision, b, c, s, p, d):
    rng = np.random.default_rng(b + s + p)
    images = rng.uniform(-1, 1, (b, c, s, s)).astype(np.float32)
    check(backend_precision, "patch_embed", images, rand(rng, d, c, p, p, scale=(c * p * p) ** -0.5),
          rand(rng, d, scale=0.1))


# ---- the rule itself -----------------------------------------------------------------------------

class _Shifted:
    """The reference ops with one output element moved: what a tail or padding bug looks like."""

    def __init__(self, precision: str, shift: float) -> None:
        self.inner, self.shift = TorchOps("fp32"), shift

    def __getattr__(self, op):
        def run(*args):
            out = getattr(self.inner, op)(*args).copy()
            out.reshape(-1)[-1] += self.shift * max(1.0, float(np.abs(out).max()))
            return out
        return run


@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("op", ["linear", "attention"])
def test_the_reduced_rule_catches_a_wrong_element(monkeypatch, precision, op):
    """A last element off by the output's scale (a wrong tail) fails the rule, while the exact
    fp32 result passes it."""
    rng = np.random.default_rng(1)
    args = ((rand(rng, 33, 100), rand(rng, 37, 100, scale=0.1), rand(rng, 37), "none", None)
            if op == "linear" else (rand(rng, 2, 17, 3 * 48, scale=2.0), 3))
    for shift, passes in ((0.0, True), (1.0, False)):
        monkeypatch.setattr(backends.backend_class("torch"), "ops",
                            classmethod(lambda cls, precision="fp32", **o: _Shifted(precision, shift)))
        if passes:
            check(("torch", precision), op, *args)
        else:
            with pytest.raises(AssertionError):
                check(("torch", precision), op, *args)
