"""The Mojo backend beyond parity: bad input at the Python boundary and at the C ABI, thread
counts, and concurrent forwards."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import polyvit
from polyvit import BackendError, parity
from polyvit.config import get_config
from polyvit.weights import random_weights

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}
CFG = get_config("vit_test")


@pytest.fixture(scope="module")
def backend():
    from polyvit.backends.mojo_backend import MojoBackend

    ok, reason = MojoBackend.availability()
    if not ok:
        if "mojo" in REQUIRED:
            pytest.fail(f"backend mojo is required here but unavailable: {reason}")
        pytest.skip(f"backend mojo unavailable: {reason}")
    return MojoBackend


@pytest.fixture(scope="module")
def weights():
    return random_weights(CFG, seed=3)


@pytest.fixture(scope="module")
def images():
    return parity.random_images(CFG, 4, seed=4)


# ---- the single ops at the Python boundary ----------------------------------------------------


def test_ops_reject_bad_arrays(backend):
    ops = backend.ops()
    x = np.ones((4, 8), np.float32)
    w = np.ones((6, 8), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops.linear(x.astype(np.float64), w, None)
    with pytest.raises(TypeError, match="numpy array"):
        ops.linear(x.tolist(), w, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.linear(np.ones((8, 4), np.float32).T, w, None)
    with pytest.raises(ValueError, match=r"expected \(N, 8\)"):
        ops.linear(x, np.ones((6, 7), np.float32), None)
    with pytest.raises(ValueError, match="bias has shape"):
        ops.linear(x, w, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="needs residual"):
        ops.linear(x, w, None, epilogue="residual")
    with pytest.raises(ValueError, match="unknown epilogue"):
        ops.linear(x, w, None, epilogue="gelu")
    with pytest.raises(ValueError, match="empty"):
        ops.linear(np.ones((0, 8), np.float32), w, None)
    with pytest.raises(ValueError, match="positive divisor"):
        ops.attention(np.ones((1, 5, 48), np.float32), 5)
    with pytest.raises(ValueError, match="3 \\* D"):
        ops.attention(np.ones((1, 5, 47), np.float32), 1)
    with pytest.raises(ValueError, match="eps must be positive"):
        ops.layernorm(x, np.ones(8, np.float32), np.zeros(8, np.float32), 0.0)
    with pytest.raises(ValueError, match="unknown GELU form"):
        ops.bias_gelu(x, np.ones(8, np.float32), form="sigmoid")


# ---- the C ABI checks its own arguments ---------------------------------------------------------


def test_the_kernels_check_their_arguments(backend):
    from polyvit.backends.mojo_backend import kernels, pack_weight, pad_bias

    k = kernels()
    x = np.ones((4, 8), np.float32)
    packed = pack_weight(np.ones((6, 8), np.float32), k.nr)
    bias = pad_bias(None, 6, k.nr)
    out = np.empty((4, 6), np.float32)

    def linear(**change):
        args = dict(epilogue=0, x=x.ctypes.data, x_len=x.size, weight=packed.ctypes.data,
                    weight_len=packed.size, bias=bias.ctypes.data, bias_len=bias.size,
                    out=out.ctypes.data, out_len=out.size, residual=0, residual_len=0, m=4, n=6,
                    k=8, tid=0, nthreads=1)
        args.update(change)
        return k.call("polyvit_linear", *args.values())

    assert linear() == 0
    np.testing.assert_allclose(out, 8.0)
    for change, message in [
        (dict(out_len=23), "'out': a buffer smaller"),
        (dict(m=5), "'x': a buffer smaller"),          # x holds 4 rows, not 5
        (dict(weight_len=10), "'weight': a buffer smaller"),
        (dict(x=0), "'x': a null address"),
        (dict(k=0), "'k': a dimension"),
        (dict(n=-3), "'n': a dimension"),
        (dict(epilogue=3), "'residual': a null address"),  # residual epilogue without residual
        (dict(epilogue=9), "'epilogue': an unknown"),
        (dict(tid=1), "'tid': a thread index"),
        (dict(nthreads=0), "'tid': a thread index"),
    ]:
        with pytest.raises(BackendError, match=message):
            linear(**change)


def test_the_forward_checks_its_weight_table(backend, weights, images):
    from polyvit.backends.mojo_backend import _address

    model = polyvit.load(weights, backend="mojo", config=CFG, threads=2)
    impl = model.impl
    good = impl._table.copy()
    impl._table[1] -= 1  # the patch projection claims one float fewer than it needs
    with pytest.raises(BackendError, match="'weights': a buffer smaller"):
        model(images)
    impl._table[:] = good
    impl._config[3] = 47  # a width no longer divisible by the head count
    with pytest.raises(BackendError, match="'config': an inconsistent config"):
        model(images)
    impl._config[3] = CFG.embed_dim
    assert _address(impl._table) and model(images).shape == (4, CFG.num_classes)


# ---- the backend's own options and input -------------------------------------------------------


def test_bad_options_and_images(backend, weights):
    with pytest.raises(ValueError, match="threads must be an integer"):
        polyvit.load(weights, backend="mojo", config=CFG, threads=0)
    with pytest.raises(BackendError, match="does not offer precision 'bf16'"):
        polyvit.load(weights, backend="mojo", precision="bf16", config=CFG)
    with pytest.raises(BackendError, match="does not take option"):
        polyvit.load(weights, backend="mojo", config=CFG, device="gpu")
    model = polyvit.load(weights, backend="mojo", config=CFG)
    with pytest.raises(TypeError, match="float32"):
        model(np.zeros((1, 3, 32, 32), np.float64))
    with pytest.raises(ValueError, match="shape"):
        model(np.zeros((1, 3, 31, 32), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        model(np.zeros((1, 32, 32, 3), np.float32).transpose(0, 3, 1, 2))


def test_thread_counts_give_identical_logits(backend, weights, images):
    """Each output element is computed by one thread in the same order, whatever the count."""
    logits = [polyvit.load(weights, backend="mojo", config=CFG, threads=n)(images)
              for n in (1, 2, 3)]
    np.testing.assert_array_equal(logits[0], logits[1])
    np.testing.assert_array_equal(logits[0], logits[2])


def test_concurrent_forwards_agree(backend, weights, images):
    model = polyvit.load(weights, backend="mojo", config=CFG, threads=2)
    expected = {b: model(images[:b]) for b in (1, 2, 4)}
    errors: list[BaseException] = []

    def worker(b: int) -> None:
        try:
            for _ in range(20):
                np.testing.assert_array_equal(model(images[:b]), expected[b])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in (1, 2, 4, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_many_batch_sizes_reuse_a_bounded_workspace_cache(backend, weights, images):
    model = polyvit.load(weights, backend="mojo", config=CFG)
    big = np.concatenate([images] * 3)
    for b in range(1, 13):
        alone = model(big[:b])
        assert alone.shape == (b, CFG.num_classes)
    from polyvit.backends.mojo_backend import WORKSPACES_KEPT

    assert len(model.impl._workspaces) == WORKSPACES_KEPT
