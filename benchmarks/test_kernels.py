"""Kernel benchmarks (pytest-benchmark), each timed call on data prepared before timing:

- test_forward: every available backend's whole forward pass (weights packed once, at load)
  against the torch peer (polyvit.bench.torch_peer under torch eager);
- test_linear: the GEMMs of backends with a layer that packs its weight once (cpp), against
  F.linear, which needs no packing;
- test_layernorm, test_attention, test_bias_gelu: the ops that take no packed weights, per
  backend (Backend.ops()) and torch's fused op.

Run: .venv/bin/python -m pytest benchmarks/test_kernels.py --benchmark-group-by=param:shape
(add --benchmark-disable for a quick smoke run: each case once, untimed)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import polyvit
from polyvit import backends, parity
from polyvit.config import get_config
from polyvit.weights import random_weights

CFG = get_config("vit_small_patch32_224")
BACKENDS = [n for n, (ok, _) in backends.available_backends().items() if ok]
TORCH = "torch.nn.functional"
# (M, K, N) of ViT-S/32's GEMMs at batch 1 (M = 50 tokens) and batch 32
LINEAR = {"qkv_b1": (50, 384, 1152), "proj_b1": (50, 384, 384), "fc1_b1": (50, 384, 1536),
          "fc2_b1": (50, 1536, 384), "fc1_b32": (1600, 384, 1536)}
EPILOGUES = ["none", "gelu_erf", "residual"]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@functools.cache
def weights():
    return random_weights(CFG, seed=0)


@functools.cache
def forward(impl: str):
    """A loaded model's forward: packing and any kernel builds happen here, before timing."""
    if impl == "torch eager (peer)":
        from polyvit.bench import peers, torch_peer

        return peers.torch_eager(torch_peer.vit(CFG, weights()), "fp32")
    return polyvit.load(weights(), backend=impl, config=CFG)


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("impl", BACKENDS + ["torch eager (peer)"])
def test_forward(benchmark, impl, batch):
    run, images = forward(impl), parity.random_images(CFG, batch)
    run(images)  # the first call of a batch size may build plans, graphs or buffers
    benchmark.extra_info["images"] = batch
    benchmark(run, images)


# ---- single ops -----------------------------------------------------------------------------------

def packed_linear(impl: str, weight, bias):
    """fn(x, epilogue, residual) with the weight already in the layout its GEMM reads."""
    if impl == "cpp":
        from polyvit import _cpu

        layer = _cpu.Linear(weight, bias, "fp32")  # packs here, once
        return lambda x, epilogue, residual: layer(x, epilogue, residual)
    import torch
    import torch.nn.functional as F

    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    epilogues = {"none": lambda y, r: y, "gelu_erf": lambda y, r: F.gelu(y),
                 "residual": lambda y, r: y + torch.from_numpy(r)}

    def run(x, epilogue, residual):
        with torch.inference_mode():
            return epilogues[epilogue](F.linear(torch.from_numpy(x), w, b), residual).numpy()
    return run


@pytest.mark.parametrize("impl", ["cpp", TORCH])
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("shape", LINEAR)
def test_linear(benchmark, impl, epilogue, shape):
    if impl != TORCH and impl not in BACKENDS:
        pytest.skip(f"backend {impl} is not available here")
    m, k, n = LINEAR[shape]
    x, w, b = rand(m, k), rand(n, k, seed=1) * np.float32(k ** -0.5), rand(n, seed=2)
    r = rand(m, n, seed=3) if epilogue == "residual" else None
    benchmark.extra_info["gflop"] = 2 * m * k * n / 1e9
    benchmark(packed_linear(impl, w, b), x, epilogue, r)


class TorchOps:
    """torch's fused counterparts of the ops that take no packed weights."""

    def layernorm(self, x, w, b, eps):
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            t = torch.from_numpy
            return F.layer_norm(t(x), (x.shape[-1],), t(w), t(b), eps).numpy()

    def attention(self, qkv, heads):
        import torch

        from polyvit.bench.torch_peer import attention

        with torch.inference_mode():
            return attention(torch.from_numpy(qkv), heads).numpy()

    def bias_gelu(self, x, b, form="erf"):
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            return F.gelu(torch.from_numpy(x) + torch.from_numpy(b),
                          approximate="none" if form == "erf" else "tanh").numpy()


@functools.cache
def ops(impl: str):
    return TorchOps() if impl == TORCH else backends.backend_class(impl).ops()


@pytest.mark.parametrize("impl", BACKENDS + [TORCH])
@pytest.mark.parametrize("shape", [(50, 384), (1600, 384)], ids=["b1", "b32"])
def test_layernorm(benchmark, impl, shape):
    benchmark(ops(impl).layernorm, rand(*shape), rand(shape[1]), rand(shape[1]), 1e-6)


@pytest.mark.parametrize("impl", BACKENDS + [TORCH])
@pytest.mark.parametrize("batch", [1, 32])
def test_attention(benchmark, impl, batch):
    benchmark(ops(impl).attention, rand(batch, 50, 3 * 384), 6)


@pytest.mark.parametrize("impl", BACKENDS + [TORCH])
@pytest.mark.parametrize("shape", [(50, 1536), (1600, 1536)], ids=["b1", "b32"])
def test_bias_gelu(benchmark, impl, shape):
    benchmark(ops(impl).bias_gelu, rand(*shape), rand(shape[1]), "erf")
