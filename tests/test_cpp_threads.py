"""The C++ backend under threads: concurrent forward calls on one model, the threads= option,
OMP_NUM_THREADS, and workspaces reused across batch sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights

pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")

CFG = get_config("vit_test")
WEIGHTS = random_weights(CFG, seed=5)


def test_concurrent_calls_on_one_model_match_sequential_ones():
    """Several Python threads share one model (each call takes its own workspace)."""
    model = polyvit.load(WEIGHTS, backend="cpp", config=CFG)
    inputs = [parity.random_images(CFG, 1 + i % 3, seed=i) for i in range(12)]
    expected = [model(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            got = list(pool.map(model, inputs))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_thread_count(threads):
    """Work is split by output rows/columns, never by the sum order: results are bitwise equal."""
    images = parity.random_images(CFG, 3, seed=1)
    one = polyvit.load(WEIGHTS, backend="cpp", config=CFG, threads=1)
    many = polyvit.load(WEIGHTS, backend="cpp", config=CFG, threads=threads)
    assert many.impl.threads == threads
    np.testing.assert_array_equal(many(images), one(images))


def test_workspace_reuse_across_batch_sizes():
    model = polyvit.load(WEIGHTS, backend="cpp", config=CFG)
    big = parity.random_images(CFG, 5, seed=2)
    first = model(big)
    small = model(np.ascontiguousarray(big[:2]))  # reuses the larger workspace
    np.testing.assert_array_equal(small, first[:2])
    np.testing.assert_array_equal(model(big), first)


def test_default_thread_count_follows_omp_num_threads():
    code = ("import polyvit; m = polyvit.load(config='vit_test', backend='cpp'); "
            "print(m.impl.threads)")
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "3"
