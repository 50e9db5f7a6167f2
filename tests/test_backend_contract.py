"""What every backend must do the same way, seen from outside: options and their errors, the
device string, threads, per-batch-size caches, concurrent calls, and bad input to ops and
forward. Parametrised over the backends; accuracy is tests/test_ops.py's and test_parity.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import polyvit
from polyvit import backends, parity
from polyvit.backends import _native
from polyvit.config import get_config
from polyvit.errors import BackendError
from polyvit.weights import random_weights

CFG = get_config("vit_test")
WEIGHTS = random_weights(CFG, seed=5)
IMAGES = parity.random_images(CFG, 5, seed=6)


def options_of(name: str) -> tuple[str, ...]:
    return backends.backend_class(name).option_names()


def with_option(option: str) -> list[str]:
    return [n for n in backends.names() if option in options_of(n)]


# ---- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, "2", 2.5, True, 10 ** 6])
@pytest.mark.parametrize("name", with_option("threads"))
def test_a_bad_thread_count_is_the_same_error_everywhere(name, value):
    cls = backends.backend_class(name)
    expected = (f"backend {name!r}: threads={value!r} is not accepted; threads takes an "
                "integer from 1 to 1024")
    with pytest.raises(BackendError) as load_error:
        polyvit.load(WEIGHTS, backend=name, config=CFG, threads=value)
    with pytest.raises(BackendError) as ops_error:
        cls.ops("fp32", threads=value)
    assert str(load_error.value) == str(ops_error.value) == expected


@pytest.mark.parametrize("name", backends.names())
def test_an_unknown_option_is_the_same_error_everywhere(name):
    accepted = ", ".join(options_of(name)) or "none"
    expected = f"backend {name!r} has no option 'colour'; its options: {accepted}"
    with pytest.raises(BackendError) as load_error:
        polyvit.load(WEIGHTS, backend=name, config=CFG, colour="red")
    with pytest.raises(BackendError) as ops_error:
        backends.backend_class(name).ops(colour="red")
    assert str(load_error.value) == str(ops_error.value) == expected


@pytest.mark.parametrize("name", backends.names())
def test_an_unknown_precision_names_the_offered_ones(name):
    cls = backends.backend_class(name)
    for call in (lambda: polyvit.load(WEIGHTS, backend=name, config=CFG, precision="fp8"),
                 lambda: cls.ops("fp8")):
        with pytest.raises(BackendError, match=f"does not offer precision 'fp8'; it offers: "
                                               f"{', '.join(cls.precisions)}"):
            call()


@pytest.mark.parametrize("name", backends.names())
def test_device_is_a_string_everywhere(name):
    """A backend with devices takes device="..." and refuses an int with the shared wording; a
    backend without devices refuses device= as an unknown option."""
    cls = backends.backend_class(name)
    if "device" not in options_of(name):
        with pytest.raises(BackendError, match=f"backend {name!r} has no option 'device'"):
            cls.check_arguments("fp32", {"device": "0"})
        return
    spec = next(o for o in cls.option_specs if o.name == "device")
    with pytest.raises(BackendError, match=rf"backend {name!r}: device=0 is not accepted; "
                                           rf"device takes a device string such as"):
        cls.check_arguments("fp32", {"device": 0})
    default = spec.default_value()
    assert default is None or isinstance(default, str)


def test_cuda_device_strings():
    cls = backends.backend_class("cuda")
    for value in ("0", "1", "cuda", "cuda:0", "cuda:3"):
        assert cls.check_arguments("fp32", {"device": value})["device"] == value
    for value in ("gpu", "cuda:", "cuda:x", "-1", "opencl:cpu"):
        with pytest.raises(BackendError, match=rf"device={value!r} is not accepted"):
            cls.check_arguments("fp32", {"device": value})


# ---- native backends, running ------------------------------------------------------------------

@pytest.fixture
def model(native_backend_name):
    return polyvit.load(WEIGHTS, backend=native_backend_name, config=CFG)


def test_thread_counts_give_identical_logits(native_backend_name):
    """Work is split by output rows/columns, never by the order of a sum: the logits are bitwise
    equal whatever the thread count."""
    if "threads" not in options_of(native_backend_name):
        pytest.skip(f"backend {native_backend_name} has no threads option")
    logits = [polyvit.load(WEIGHTS, backend=native_backend_name, config=CFG, threads=n)(IMAGES)
              for n in (1, 2, 3)]
    np.testing.assert_array_equal(logits[0], logits[1])
    np.testing.assert_array_equal(logits[0], logits[2])


def test_the_default_thread_count_is_one_rule():
    """Every backend with threads defaults to _native.default_threads(): OMP_NUM_THREADS here."""
    names = [n for n in with_option("threads") if backends.available_backends()[n][0]]
    code = ("import json, polyvit\n"
            f"print(json.dumps({{n: polyvit.load(config='vit_test', backend=n).impl."
            f"options['threads'] for n in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "3"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {n: 3 for n in names}


def test_batch_sizes_are_cached_least_recently_used_first(model):
    """Every native backend keeps the state of the BATCH_SIZES_KEPT most recently used batch
    sizes, and a batch of any size gives the rows its images give alone."""
    alone = np.concatenate([model(np.ascontiguousarray(IMAGES[i:i + 1])) for i in range(5)])
    for b in (1, 2, 3, 4, 5, 2):
        np.testing.assert_array_equal(model(np.ascontiguousarray(IMAGES[:b])), alone[:b])
    assert _native.BATCH_SIZES_KEPT == 4
    assert model.impl.cached_batch_sizes() == [3, 4, 5, 2]
    model.impl.clear_cache()
    assert model.impl.cached_batch_sizes() == []
    np.testing.assert_array_equal(model(IMAGES), alone)


def test_concurrent_calls_match_sequential_ones(model):
    expected = {b: model(np.ascontiguousarray(IMAGES[:b])) for b in (1, 2, 5)}
    errors: list[BaseException] = []

    def worker(b: int) -> None:
        try:
            for _ in range(8):
                np.testing.assert_array_equal(model(np.ascontiguousarray(IMAGES[:b])),
                                              expected[b])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(b,)) for b in (1, 2, 5, 2, 1)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("images,error,match", [
    (np.zeros((1, 3, 32, 32), np.float64), TypeError, "float32"),
    (np.zeros((1, 3, 31, 32), np.float32), ValueError, "shape"),
    (np.zeros((3, 32, 32), np.float32), ValueError, "batch axis"),
    (np.zeros((0, 3, 32, 32), np.float32), ValueError, "empty batch"),
    (np.zeros((1, 32, 32, 3), np.float32).transpose(0, 3, 1, 2), ValueError, "C-contiguous"),
    ([[1.0]], TypeError, "numpy array"),
])
def test_bad_images_are_refused(model, images, error, match):
    with pytest.raises(error, match=match):
        model(images)


# ---- ops: the same checks, for every backend and precision ---------------------------------------

def f32(*shape):
    return np.ones(shape, np.float32)


BAD_OPS = [
    ("linear", (f32(4, 8).astype(np.float64), f32(3, 8), None), {}, TypeError, "x has dtype"),
    ("linear", (f32(4, 8), f32(3, 7), None), {}, ValueError, r"weight has shape \(3, 7\)"),
    ("linear", (f32(4, 8), f32(3, 8), f32(4)), {}, ValueError, r"bias has shape \(4,\)"),
    ("linear", (f32(8, 4).T, f32(3, 8), None), {}, ValueError, "x is not C-contiguous"),
    ("linear", (f32(4, 8), f32(3, 8), None), {"epilogue": "relu"}, ValueError, "unknown epilogue"),
    ("linear", (f32(4, 8), f32(3, 8), None), {"epilogue": "residual"}, ValueError, "residual="),
    ("linear", (f32(0, 8), f32(3, 8), None), {}, ValueError, "x is empty"),
    ("linear", ([[1.0]], f32(3, 8), None), {}, TypeError, "x must be a numpy array"),
    ("layernorm", (f32(4, 8), f32(8), f32(8), 0.0), {}, ValueError, "eps must be"),
    ("layernorm", (f32(4, 8), f32(7), f32(8), 1e-6), {}, ValueError, "weight has shape"),
    ("attention", (f32(1, 5, 10), 1), {}, ValueError, "3 \\* D"),
    ("attention", (f32(1, 5, 12), 3), {}, ValueError, "num_heads must be"),
    ("bias_gelu", (f32(4, 8), f32(8)), {"form": "relu"}, ValueError, "unknown GELU form"),
    ("bias_gelu", (f32(4, 8), f32(8)[::2]), {}, ValueError, "bias has shape"),
    ("patch_embed", (f32(1, 3, 10, 10), f32(4, 3, 4, 4), f32(4)), {}, ValueError, "tile"),
    ("patch_embed", (f32(1, 3, 8, 8), f32(4, 2, 4, 4), f32(4)), {}, ValueError, "weight has shape"),
]


@pytest.mark.parametrize("op,args,kwargs,error,match", BAD_OPS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_OPS)])
def test_bad_op_input_is_the_same_error_everywhere(backend_precision, op, args, kwargs, error,
                                                   match):
    name, precision = backend_precision
    ops = backends.backend_class(name).ops(precision)
    with pytest.raises(error, match=match):
        getattr(ops, op)(*args, **kwargs)
