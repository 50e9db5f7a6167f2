"""The CUDA backend on a device (a GPU, or the CPU emulator: tests/test_cuda_emulated.py), beyond
what the shared matrix runs for every backend (tests/test_ops.py, tests/test_parity.py,
tests/test_backend_contract.py: ops and logits per precision, options, batch caches, threads):
the last block's class-query attention, graph replay, device selection, device arrays in and
out, and errors. Every test skips with the reason where there is no CUDA device (docs/gpu.md)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from conftest import _backend_or_skip
from polyvit import BackendError, parity
from polyvit.backends.cuda_backend import CudaBackend
from polyvit.backends.torch_backend import TorchOps
from polyvit.config import ViTConfig, get_config
from polyvit.weights import random_weights
from test_ops import rand

ORACLE = TorchOps("fp64")


@pytest.fixture(autouse=True)
def gpu():
    _backend_or_skip("cuda")


# ---- the last block's attention: the class token's query alone ------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("b,t,d,h", [(2, 50, 384, 6), (3, 17, 48, 3), (1, 1, 64, 1), (2, 65, 128, 2)],
                         ids=lambda v: str(v))
def test_class_query_attention(precision, b, t, d, h):
    """The kernel path of the last block (q of token 0 against every key and value, from the
    layout the forward keeps: q (B, D) and k | v (B, T, 2D)) against the float64 reference's
    attention(qkv, heads, queries=1): fp32 by the parity rule, bf16/fp16 by the reduced rule."""
    import torch

    from polyvit import reference

    rng = np.random.default_rng(b * t + d)
    qkv = rand(rng, b, t, 3 * d, scale=2.0)
    out = CudaBackend.ops(precision=precision).attention_class_query(qkv, h)
    oracle = reference.attention(torch.from_numpy(qkv.astype(np.float64)), h, queries=1).numpy()
    fp32 = reference.attention(torch.from_numpy(qkv), h, queries=1).numpy()
    bound = parity.tolerance(fp32, oracle)
    if precision != "fp32":
        full = ORACLE.attention(qkv.astype(np.float64), h)
        bound = bound + parity.reduced_op_bound("attention", precision, (qkv, h), full)[:, :1]
    assert out.shape == (b, 1, d) and out.dtype == np.float32
    assert np.all(np.abs(out - oracle) <= bound), f"max|d| {np.max(np.abs(out - oracle)):.3g}"


def test_class_query_attention_checks_its_input():
    ops = CudaBackend.ops()
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.attention_class_query(np.zeros((1, 48, 5), np.float32).transpose(0, 2, 1), 1)
    from polyvit import _cuda

    with pytest.raises(ValueError, match="queries must be None"):
        _cuda.attention(np.zeros((1, 5, 48), np.float32), 1, "fp32", 2)


# ---- the forward in 16 bits on a small config ----------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_logits_of_a_small_config(precision):
    """The shared reduced-precision cases are ViT-sized (minutes when emulated) or odd-sized (the
    element-wise loads); vit_test takes the tensor-core path's 16-byte copies everywhere, the last
    block's class rows read in place included (row stride T * D = 816). Cosine against fp32 by
    parity.REDUCED (top-1 is left to the shared test: 16 random-weight images have near ties)."""
    cfg = get_config("vit_test")
    weights, images = random_weights(cfg, seed=3), parity.random_images(cfg, 16, seed=4)
    fp32 = CudaBackend(cfg, weights, "fp32").forward(images)
    out = CudaBackend(cfg, weights, precision).forward(images)
    budget = parity.REDUCED[precision]
    found = parity.agreement(out, fp32, budget.error_std)
    assert found.cosine.min() >= budget.cosine, found.summary(f"cuda {precision} vit_test")


# ---- graphs --------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def fixture(name: str = "vit_test", batch: int = 4):
    cfg = get_config(name)
    return cfg, random_weights(cfg, seed=21), parity.random_images(cfg, batch, seed=22)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_replay_equals_kernel_by_kernel(precision):
    """The same kernels in the same order: bit-identical, on every replay."""
    cfg, weights, images = fixture()
    graph = CudaBackend(cfg, weights, precision)
    eager = CudaBackend(cfg, weights, precision, cuda_graph=False)
    first = graph.forward(images)
    np.testing.assert_array_equal(graph.forward(images), first)
    np.testing.assert_array_equal(eager.forward(images), first)


def test_clear_cache_frees_the_plans_and_the_next_call_rebuilds_them():
    cfg, weights, images = fixture()
    model = CudaBackend(cfg, weights, "fp32")
    first = model.forward(images)
    model.clear_cache()
    assert model.cached_batch_sizes() == []
    np.testing.assert_array_equal(model.forward(images), first)  # re-captured from scratch
    assert model.cached_batch_sizes() == [len(images)]


# ---- devices -------------------------------------------------------------------------------------


def test_the_device_strings_name_one_device():
    cfg, weights, images = fixture()
    logits = [CudaBackend(cfg, weights, "fp32", device=d).forward(images)
              for d in ("0", "cuda", "cuda:0")]
    for other in logits[1:]:
        np.testing.assert_array_equal(other, logits[0])


def test_the_callers_current_device_is_left_as_it_was():
    """The backend works on its device inside scopes that restore the thread's current device
    (cudaSetDevice is sticky and per thread, and torch and CuPy read theirs from it): loading,
    running, device arrays, the cache and the ops on another device leave it where it was. On
    the emulator: EMU_DEVICES=2 (tests/test_cuda_emulated.py)."""
    from polyvit import _cuda

    if _cuda.probe()["count"] < 2:
        pytest.skip("needs two CUDA devices (on the emulator: EMU_DEVICES=2)")
    cfg, weights, images = fixture()
    before = _cuda.current_device()
    other = 1 - min(before, 1)
    model = CudaBackend(cfg, weights, "fp32", device=str(other))
    assert _cuda.current_device() == before
    logits = model.forward(images)
    assert _cuda.current_device() == before
    out = model.run(images, output="device")
    assert out.device == other
    np.testing.assert_array_equal(out.numpy(), logits)
    del out
    model.clear_cache()
    x = rand(np.random.default_rng(0), 3, 8)
    CudaBackend.ops(device=str(other)).linear(x, rand(np.random.default_rng(1), 4, 8), None)
    assert _cuda.current_device() == before
    np.testing.assert_array_equal(CudaBackend(cfg, weights, "fp32", device=str(before)).forward(images),
                                  logits)
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        assert torch.cuda.current_device() == before


def test_a_device_this_machine_lacks_is_refused():
    from polyvit import _cuda

    count = _cuda.probe()["count"]
    cfg, weights, _ = fixture()
    with pytest.raises(BackendError, match=f"device 'cuda:{count}' does not exist"):
        CudaBackend(cfg, weights, "fp32", device=f"cuda:{count}")
    with pytest.raises(BackendError, match="does not exist"):
        CudaBackend.ops(device=str(count))


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
    cfg, weights, images = fixture()
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


class InterfaceOnly:
    """A producer that speaks only the CUDA array interface, as torch exports it: version 2,
    no 'stream' (so run() waits for the legacy default stream)."""

    def __init__(self, tensor):
        self._tensor = tensor
        self.__cuda_array_interface__ = tensor.__cuda_array_interface__


def test_device_arrays_are_read_after_torchs_pending_writes(torch_cuda):
    """torch's kernels are asynchronous and the backend's stream is non-blocking: run() must
    order itself after the writes torch has queued. Each input is NaN until a copy queued behind
    a 0.1 s GPU sleep fills it, so reading it early gives NaN logits. Through DLPack (torch
    itself, torch on a side stream, a DLPack-only wrapper) and the CUDA array interface."""
    torch = torch_cuda
    cfg, weights, images = fixture()
    model = CudaBackend(cfg, weights, "fp32")
    host = model.forward(images)  # the plan exists: run() does no allocation that could sync
    x = torch.from_numpy(images).cuda()

    def pending():  # NaN now, the images once torch's stream gets past the sleep
        y = torch.full_like(x, float("nan"))
        torch.cuda._sleep(10**8)
        y.copy_(x)
        return y

    np.testing.assert_array_equal(model.run(pending()), host)
    np.testing.assert_array_equal(model.run(DLPackOnly(pending())), host)
    np.testing.assert_array_equal(model.run(InterfaceOnly(pending())), host)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        np.testing.assert_array_equal(model.run(pending()), host)
    torch.cuda.synchronize()


def test_device_arrays_are_freed_without_waiting_for_the_device(torch_cuda):
    """The logits of output="device" are stream-ordered memory: dropping them queues the free
    (cudaFreeAsync) instead of cudaFree, which would wait for the whole device, here for half a
    second of torch's work."""
    import time

    torch = torch_cuda
    cfg, weights, images = fixture()
    model = CudaBackend(cfg, weights, "fp32")
    out = model.run(images, output="device")
    torch.cuda._sleep(10**9)
    start = time.perf_counter()
    del out
    freed = time.perf_counter() - start
    torch.cuda.synchronize()
    assert freed < 0.1, f"dropping the logits took {freed:.3f} s: the free waited for the device"


def test_bad_device_arrays_are_rejected(torch_cuda):
    torch = torch_cuda
    cfg, weights, images = fixture()
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
    cfg, weights, images = fixture()
    model = CudaBackend(cfg, weights, "fp32")

    class HostPointer:
        __cuda_array_interface__ = {"shape": images.shape, "typestr": "<f4", "version": 3,
                                    "data": (images.ctypes.data, False)}

    with pytest.raises(ValueError, match="not in CUDA device memory"):
        model.run(HostPointer())


# ---- errors ------------------------------------------------------------------------------


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
