"""The CUDA backend on a GPU, beyond the fp32 parity that tests/test_parity.py and
tests/test_ops.py already run through the backend_name fixture: the tensor-core paths op by op,
bf16/fp16 logits, graph replay, the batch-size cache, device arrays in and out, threads, and
errors. Every test skips with the reason where there is no CUDA device (see docs/gpu.md)."""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import pytest

from conftest import _backend_or_skip
from polyvit import parity, reference
from polyvit.backends.cuda_backend import CudaBackend, CudaOps
from polyvit.config import ViTConfig, get_config
from polyvit.weights import random_weights
from test_ops import LINEAR_SHAPES, rand

# Unit roundoff (half an ulp, relative) of the 16-bit types: every rounding errs by at most this.
UNIT = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}
FP32_UNIT = 2.0 ** -24


@pytest.fixture(autouse=True)
def gpu():
    _backend_or_skip("cuda")


def rounded(a: np.ndarray, precision: str) -> np.ndarray:
    """a rounded to bf16/fp16 (as the device does, nearest even), returned as float64."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.from_numpy(a).to(dtype).double().numpy()


# ---- tensor-core ops against float64 on the same rounded inputs ---------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("epilogue", ["none", "gelu_erf", "gelu_tanh", "residual"])
@pytest.mark.parametrize("m,k,n", LINEAR_SHAPES, ids=lambda v: str(v))
def test_tensor_core_linear(precision, epilogue, m, k, n):
    """Inputs are rounded to 16 bits on the device; products of two 16-bit numbers are exact in
    fp32, so what remains is fp32 accumulation: at most about K * 2^-24 * sum|x w| per output
    (the gamma_K bound), with a factor 2 and the epilogue's few ulp on top."""
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    x, w, b = rand(rng, m, k), rand(rng, n, k, scale=1 / np.sqrt(k)), rand(rng, n, scale=0.1)
    residual = rand(rng, m, n) if epilogue == "residual" else None
    out = CudaOps(precision).linear(x, w, b, epilogue, residual)
    xr, wr = rounded(x, precision), rounded(w, precision)
    y = xr @ wr.T + b
    if epilogue.startswith("gelu_"):
        import torch

        y = reference.GELU[epilogue[5:]](torch.from_numpy(y)).numpy()
    elif epilogue == "residual":
        y = y + residual
    magnitude = np.abs(xr) @ np.abs(wr).T + np.abs(b) + np.abs(y)
    bound = 2 * (k + 8) * FP32_UNIT * magnitude + 1e-6
    assert out.shape == (m, n) and out.dtype == np.float32
    assert np.all(np.abs(out - y) <= bound), f"max excess {np.max(np.abs(out - y) - bound):.3g}"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("b,t,d,h", [(2, 50, 384, 6), (1, 197, 192, 3), (3, 17, 48, 3), (1, 1, 64, 1)],
                         ids=lambda v: str(v))
def test_reduced_precision_attention(precision, b, t, d, h):
    """qkv rounded to 16 bits, fp32 inside, output rounded: the output is a convex combination
    of v, so it errs by at most one rounding of max|v| plus fp32 noise."""
    import torch

    rng = np.random.default_rng(b * t + d)
    qkv = rand(rng, b, t, 3 * d, scale=2.0)
    out = CudaOps(precision).attention(qkv, h)
    want = reference.attention(torch.from_numpy(rounded(qkv, precision)), h).numpy()
    vmax = np.max(np.abs(rounded(qkv, precision)[..., 2 * d:]))
    assert np.max(np.abs(out - want)) <= (UNIT[precision] + 1e-5) * vmax


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_layernorm(precision):
    """fp32 statistics, one rounding of the output."""
    import torch

    rng = np.random.default_rng(3)
    x = rand(rng, 197, 384, scale=3.0) + 10.0
    w, b = 1 + rand(rng, 384, scale=0.1), rand(rng, 384, scale=0.1)
    out = CudaOps(precision).layernorm(x, w, b, 1e-6)
    want = reference.layernorm(*(torch.from_numpy(a.astype(np.float64)) for a in (x, w, b)), 1e-6).numpy()
    assert np.all(np.abs(out - want) <= UNIT[precision] * np.abs(want) + 1e-5)


# ---- bf16 / fp16 logits --------------------------------------------------------------------------

BATCH = 32


@lru_cache(maxsize=None)
def logits_fixture(name: str):
    cfg = get_config(name)
    weights = random_weights(cfg, seed=21)
    images = parity.random_images(cfg, BATCH, seed=22)
    oracle, tol = parity.reference_outputs(cfg, weights, images)
    return cfg, weights, images, oracle


def torch_all_16bit(cfg, weights, images, precision):
    """The reference run entirely in bf16/fp16 on the CPU: every op rounds, the residual stream
    and softmax included. The backend rounds only matmul inputs, so it must do at least as well."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.inference_mode():
        w = {k: torch.from_numpy(v).to(dtype) for k, v in weights.items()}
        return reference.forward(cfg, w, torch.from_numpy(images).to(dtype)).double().numpy()


def cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("name", ["vit_small_patch32_224", "vit_test"])
def test_reduced_precision_logits(precision, name):
    """Thresholds derived from the all-16-bit torch run on the same inputs, not guessed:
    cosine: the worst image's 1 - cosine at most twice torch's worst (plus 1e-6). On the CPU in
    2026-11 torch's worst was 1 - 0.99990 (bf16) and 1 - 0.9999985 (fp16) on ViT-S/32.
    top-1: a class may differ from the oracle's only where their oracle logits lie within twice
    the run's max error (the parity rule's swap allowance), and at least 90% must agree (torch:
    100% on ViT-S/32, 97% on vit_test, whose random logits have near-ties)."""
    cfg, weights, images, oracle = logits_fixture(name)
    ours = CudaBackend(cfg, weights, precision).forward(images).astype(np.float64)
    theirs = torch_all_16bit(cfg, weights, images, precision)
    worst_ours, worst_torch = 1 - cosine(ours, oracle).min(), 1 - cosine(theirs, oracle).min()
    assert worst_ours <= 2 * worst_torch + 1e-6, f"1 - cos: ours {worst_ours:.3g}, torch {worst_torch:.3g}"
    err = float(np.max(np.abs(ours - oracle)))
    assert np.all(parity.topk_agrees(ours, oracle, 1, err))
    assert np.mean(ours.argmax(1) == oracle.argmax(1)) >= 0.9


# ---- graphs and the batch-size cache -------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_equals_kernel_by_kernel(precision):
    """The same kernels in the same order: bit-identical, on every replay."""
    cfg, weights, images, _ = logits_fixture("vit_test")
    graph = CudaBackend(cfg, weights, precision)
    eager = CudaBackend(cfg, weights, precision, cuda_graph=False)
    first = graph.forward(images)
    np.testing.assert_array_equal(graph.forward(images), first)
    np.testing.assert_array_equal(eager.forward(images), first)


def test_batch_sizes_are_cached_and_evicted():
    cfg, weights, images, _ = logits_fixture("vit_test")
    model = CudaBackend(cfg, weights, "fp32")
    first = model.forward(images)
    for b in range(1, 11):
        model.forward(np.ascontiguousarray(np.resize(images, (b,) + images.shape[1:])))
    assert sorted(model.cached_batch_sizes()) == list(range(3, 11))  # the 8 most recent
    model.clear_cache()
    assert model.cached_batch_sizes() == []
    np.testing.assert_array_equal(model.forward(images), first)  # rebuilt from scratch
    assert model.cached_batch_sizes() == [BATCH]


# ---- device arrays in and out --------------------------------------------------------------------


@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here (a CPU build): device-array tests need a CUDA torch")
    return torch


class DLPackOnly:
    """A producer that speaks only DLPack (like JAX): no __cuda_array_interface__."""

    def __init__(self, tensor):
        self._tensor = tensor

    def __dlpack__(self, **kwargs):
        return self._tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()


def test_device_arrays_in_and_out_without_copies(torch_cuda):
    torch = torch_cuda
    cfg, weights, images, _ = logits_fixture("vit_test")
    model = CudaBackend(cfg, weights, "fp32")
    host = model.forward(images)
    x = torch.from_numpy(images).cuda()
    np.testing.assert_array_equal(model.run(x), host)               # __cuda_array_interface__
    np.testing.assert_array_equal(model.run(DLPackOnly(x)), host)   # DLPack
    out = model.run(x, output="device")
    assert out.shape == host.shape and out.device == 0
    np.testing.assert_array_equal(out.numpy(), host)
    as_tensor = torch.as_tensor(out, device="cuda")
    assert as_tensor.data_ptr() == out.__cuda_array_interface__["data"][0]  # no copy
    np.testing.assert_array_equal(as_tensor.cpu().numpy(), host)
    np.testing.assert_array_equal(torch.from_dlpack(out).cpu().numpy(), host)
    np.testing.assert_array_equal(model.run(torch.from_numpy(images)), host)  # a CPU tensor: host path


def test_bad_device_arrays_are_rejected(torch_cuda):
    torch = torch_cuda
    cfg, weights, images, _ = logits_fixture("vit_test")
    model = CudaBackend(cfg, weights, "fp32")
    x = torch.from_numpy(images).cuda()
    with pytest.raises(TypeError, match="float32"):
        model.run(x.double())
    with pytest.raises(ValueError, match="C-contiguous"):
        model.run(x.transpose(2, 3))
    with pytest.raises(ValueError, match="expected"):
        model.run(x[:, :2].contiguous())
    with pytest.raises(ValueError, match="output"):
        model.run(x, output="cupy")


def test_a_pointer_that_is_not_device_memory_is_a_value_error():
    cfg, weights, images, _ = logits_fixture("vit_test")
    model = CudaBackend(cfg, weights, "fp32")

    class HostPointer:
        __cuda_array_interface__ = {"shape": images.shape, "typestr": "<f4", "version": 3,
                                    "data": (images.ctypes.data, False)}

    with pytest.raises(ValueError, match="not in CUDA device memory"):
        model.run(HostPointer())


# ---- threads and errors ------------------------------------------------------------------------------


def test_concurrent_calls_match_serial_ones():
    cfg, weights, images, _ = logits_fixture("vit_test")
    model = CudaBackend(cfg, weights, "bf16")
    batches = [np.ascontiguousarray(images[: b]) for b in (1, 2, 5, BATCH)]
    expected = [model.forward(x) for x in batches]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                for j, x in enumerate(batches):
                    results[(i, j)] = model.forward(x)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (i, j), out in results.items():
        np.testing.assert_array_equal(out, expected[j])


def test_too_long_sequences_are_refused_at_load():
    """4097 tokens of head dim 16 need about 540 KB of shared memory per block: more than any GPU."""
    cfg = get_config("vit_test").replace(image_size=256, patch_size=4)
    with pytest.raises(ValueError, match="shared memory"):
        CudaBackend(cfg, random_weights(cfg), "fp32")


def test_out_of_memory_is_a_cuda_error_and_the_model_survives():
    """An MLP of width 65536 over 1025 tokens: 275 GB of activations at batch 1024."""
    from polyvit import _cuda

    cfg = ViTConfig(name="wide", image_size=32, patch_size=1, embed_dim=16, depth=1, num_heads=1,
                    mlp_dim=65536, num_classes=10)
    model = CudaBackend(cfg, random_weights(cfg), "fp32")
    images = parity.random_images(cfg, 1024)
    with pytest.raises(_cuda.CudaError, match="cudaErrorMemoryAllocation") as info:
        model.forward(images)
    assert "batch size 1024" in str(info.value)
    assert model.forward(images[:2]).shape == (2, 10)
