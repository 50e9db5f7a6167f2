"""Kernel benchmarks (pytest-benchmark): each backend's single ops against torch's own at
ViT-S/32's shapes. Run: .venv/bin/python -m pytest benchmarks/test_kernels.py
--benchmark-group-by=param:op,param:shape  (add --benchmark-disable for a quick smoke run)."""

from __future__ import annotations

import numpy as np
import pytest

from polyvit import backends

# (M, K, N) of ViT-S/32's GEMMs at batch 1 (M = 50 tokens) and batch 32
LINEAR = {"qkv_b1": (50, 384, 1152), "proj_b1": (50, 384, 384), "fc1_b1": (50, 384, 1536),
          "fc2_b1": (50, 1536, 384), "fc1_b32": (1600, 384, 1536)}
EPILOGUES = ["none", "gelu_erf", "residual"]
IMPLS = [n for n, (ok, _) in backends.available_backends().items() if ok] + ["torch.nn.functional"]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class TorchFunctional:
    """torch's fused building blocks: the counterpart every kernel is measured against."""

    def __init__(self):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F

    def _t(self, a):
        return None if a is None else self.torch.from_numpy(a)

    def linear(self, x, w, b, epilogue="none", residual=None):
        with self.torch.inference_mode():
            y = self.F.linear(self._t(x), self._t(w), self._t(b))
            if epilogue == "gelu_erf":
                y = self.F.gelu(y)
            elif epilogue == "gelu_tanh":
                y = self.F.gelu(y, approximate="tanh")
            elif epilogue == "residual":
                y = y + self._t(residual)
            return y.numpy()

    def layernorm(self, x, w, b, eps):
        with self.torch.inference_mode():
            return self.F.layer_norm(self._t(x), (x.shape[-1],), self._t(w), self._t(b), eps).numpy()

    def attention(self, qkv, heads):
        with self.torch.inference_mode():
            b, t, three_d = qkv.shape
            d = three_d // 3
            q, k, v = self._t(qkv).reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            return self.F.scaled_dot_product_attention(q, k, v).transpose(1, 2) \
                .reshape(b, t, d).numpy()

    def bias_gelu(self, x, b, form="erf"):
        with self.torch.inference_mode():
            return self.F.gelu(self._t(x) + self._t(b),
                               approximate="none" if form == "erf" else "tanh").numpy()


def ops_of(impl):
    return TorchFunctional() if impl == "torch.nn.functional" else \
        backends.backend_class(impl).ops()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("shape", LINEAR)
def test_linear(benchmark, impl, epilogue, shape):
    m, k, n = LINEAR[shape]
    x, w, b = rand(m, k), rand(n, k, seed=1) * np.float32(k ** -0.5), rand(n, seed=2)
    r = rand(m, n, seed=3) if epilogue == "residual" else None
    benchmark.extra_info["gflop"] = 2 * m * k * n / 1e9
    benchmark(ops_of(impl).linear, x, w, b, epilogue, r)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(50, 384), (1600, 384)], ids=["b1", "b32"])
def test_layernorm(benchmark, impl, shape):
    benchmark(ops_of(impl).layernorm, rand(*shape), rand(shape[1]), rand(shape[1]), 1e-6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 32])
def test_attention(benchmark, impl, batch):
    benchmark(ops_of(impl).attention, rand(batch, 50, 3 * 384), 6)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(50, 1536), (1600, 1536)], ids=["b1", "b32"])
def test_bias_gelu(benchmark, impl, shape):
    benchmark(ops_of(impl).bias_gelu, rand(*shape), rand(shape[1]), "erf")
