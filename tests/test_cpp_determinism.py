"""What the C++ backend's design promises beyond parity: work is split by output rows and
columns, never by the order of a sum, and every activation is quantised per token, so a result
is bitwise the same whatever the thread count, the batch it sits in, the workspace it ran in
(one per kept batch size, several for calls at once) or the calls running beside it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.backends.cpp_backend import CppBackend
from polyvit.config import get_config
from polyvit.weights import random_weights

pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")

CFG = get_config("vit_test")
WEIGHTS = random_weights(CFG, seed=5)


def runnable(precisions):
    return [pytest.param(p, marks=pytest.mark.skipif(not CppBackend.supports(p)[0],
                                                     reason=CppBackend.supports(p)[1]))
            for p in precisions]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("precision", runnable(["bf16", "int8"]))
def test_results_do_not_depend_on_the_thread_count(precision, threads):
    """fp32 is in tests/test_backend_contract.py; the reduced precisions also convert their
    operands per row, split over the threads, which must not change a bit either."""
    images = parity.random_images(CFG, 3, seed=1)
    one = polyvit.load(WEIGHTS, backend="cpp", config=CFG, precision=precision, threads=1)
    many = polyvit.load(WEIGHTS, backend="cpp", config=CFG, precision=precision, threads=threads)
    np.testing.assert_array_equal(many(images), one(images))


@pytest.mark.parametrize("precision", runnable(CppBackend.precisions))
def test_an_image_does_not_depend_on_its_batch(precision):
    """Per-token activation scales (int8) and row-wise kernels: a loud neighbour changes nothing."""
    model = polyvit.load(WEIGHTS, backend="cpp", config=CFG, precision=precision)
    images = parity.random_images(CFG, 4, seed=5)
    images[2] *= 50
    batched = model(images)
    for i in range(4):
        np.testing.assert_array_equal(model(np.ascontiguousarray(images[i:i + 1]))[0], batched[i])


ODD = CFG.replace(name="odd_sizes", embed_dim=45, num_heads=5, mlp_dim=99, image_size=40)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cfg", [CFG, CFG.replace(gelu="tanh"), ODD], ids=lambda c: c.name)
@pytest.mark.parametrize("precision", runnable(["bf16", "int8"]))
def test_the_mlp_fused_by_rows_computes_what_the_per_op_path_does(precision, cfg, threads):
    """From 96 rows per thread, bf16 and int8 run norm2, fc1 and fc2 per thread on chunks of
    48 rows (the profile books them as "mlp"); one image runs them as three ops over the
    team. 13 images of 17 or 26 tokens give each thread two whole chunks and a partial one."""
    weights = random_weights(cfg, seed=3)
    model = polyvit.load(weights, backend="cpp", config=cfg, precision=precision,
                         threads=threads)
    images = parity.random_images(cfg, 13 if threads == 2 else 7, seed=2)
    assert model.impl.profile(images, 1)["mlp"] > 0
    assert model.impl.profile(images[:1], 1)["mlp"] == 0
    batched = model(images)
    for i in range(len(images)):
        np.testing.assert_array_equal(model(np.ascontiguousarray(images[i:i + 1]))[0],
                                      batched[i])


def test_calls_at_once_across_evicted_batch_sizes_match_sequential_ones():
    """Six batch sizes through four kept workspaces, four threads: sizes are dropped while other
    calls of theirs still run, and calls of one size at once each get a workspace."""
    model = polyvit.load(WEIGHTS, backend="cpp", config=CFG, threads=1)
    inputs = [parity.random_images(CFG, 1 + i % 6, seed=i) for i in range(24)]
    expected = [model(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(2):
            for got, want in zip(pool.map(model, inputs), expected):
                np.testing.assert_array_equal(got, want)
    assert len(model.impl.cached_batch_sizes()) <= 4
    model.impl.clear_cache()
    assert model.impl.cached_batch_sizes() == []
    np.testing.assert_array_equal(model(inputs[5]), expected[5])
