"""The sycl backend beyond parity: device selection, clear errors at the Python and native
boundaries, the persistent kernel cache, thread safety, and what happens without a device."""

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
from polyvit.config import get_config
from polyvit.errors import BackendError
from polyvit.weights import random_weights

CFG = get_config("vit_test")
REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}


@pytest.fixture(scope="module")
def sb():
    """The backend module, once the backend is available (skipped, or failed when required)."""
    ok, reason = backends.available_backends()["sycl"]
    if not ok:
        if "sycl" in REQUIRED:
            pytest.fail(f"backend sycl is required here but is unavailable: {reason}")
        pytest.skip(f"backend sycl unavailable: {reason}")
    from polyvit.backends import sycl_backend

    return sycl_backend


@pytest.fixture(scope="module")
def model(sb):
    return polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """code in a fresh interpreter (the SYCL runtime reads its environment once per process)."""
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True,
                          text=True, timeout=300)


# ---- device selection ----------------------------------------------------------------------------

def test_the_default_device_is_the_opencl_cpu(model):
    assert model.impl.device.startswith("opencl:cpu")


def test_a_filter_string_selects_the_device(sb):
    m = polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG, device="opencl:cpu:0")
    assert m.impl.device == "opencl:cpu:0"


def test_a_missing_device_is_a_clear_error(sb):
    with pytest.raises(BackendError, match=r"no SYCL device matches 'level_zero:gpu'.*opencl:cpu"):
        polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG,
                     device="level_zero:gpu")
    with pytest.raises(TypeError, match="filter string"):
        polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG, device=0)


def test_vit_run_takes_a_device(sb, capsys):
    from polyvit.cli.run import main

    assert main(["--backend", "sycl", "--config", "vit_test", "--device", "opencl:cpu",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "sycl"
    assert main(["--backend", "sycl", "--config", "vit_test", "--device", "level_zero:gpu"]) == 1
    assert "no SYCL device matches" in capsys.readouterr().err
    assert main(["--backend", "torch", "--config", "vit_test", "--device", "opencl:cpu"]) == 1
    assert "takes no device" in capsys.readouterr().err


# ---- bad input -------------------------------------------------------------------------------------

def test_bad_images_are_refused_before_the_device(model):
    good = parity.random_images(CFG, 2, seed=1)
    with pytest.raises(TypeError, match="float32"):
        model(good.astype(np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        model(good.transpose(0, 1, 3, 2))
    with pytest.raises(ValueError, match="expected"):
        model(good[:, :2])


def test_bad_op_input_is_refused(sb):
    ops = sb.SyclBackend.ops()
    x, w = np.ones((4, 8), np.float32), np.ones((3, 8), np.float32)
    with pytest.raises(TypeError, match="float64, expected float32"):
        ops.linear(x.astype(np.float64), w, None)
    with pytest.raises(ValueError, match=r"weight has shape \(3, 7\)"):
        ops.linear(x, w[:, :7], None)
    with pytest.raises(ValueError, match="residual"):
        ops.linear(x, w, None, epilogue="residual")
    with pytest.raises(ValueError, match="unknown epilogue"):
        ops.linear(x, w, None, epilogue="relu")
    with pytest.raises(ValueError, match="num_heads"):
        ops.attention(np.ones((1, 4, 30), np.float32), 4)
    with pytest.raises(ValueError, match="empty"):
        ops.layernorm(np.ones((0, 8), np.float32), np.ones(8, np.float32),
                      np.ones(8, np.float32), 1e-6)


def test_the_native_bridge_checks_its_boundary(sb):
    """polyvit._sycl refuses malformed launches and copies with Python exceptions."""
    from polyvit import _sycl

    st = sb.device_state()
    plan = _sycl.Plan(st.program())
    buf = st.alloc(64)
    args = [buf, buf, buf, 4, 16.0]  # bias_gelu_erf takes (x, bias, y, N)
    with pytest.raises(ValueError, match="no kernel 'gelu'"):
        plan.add("gelu", [1, 16], [1, 16], args[:4])
    with pytest.raises(ValueError, match="5 arguments given, the kernel takes 4"):
        plan.add("bias_gelu_erf", [1, 16], [1, 16], args)
    with pytest.raises(ValueError, match="not a positive multiple"):
        plan.add("bias_gelu_erf", [1, 20], [1, 16], args[:4])
    with pytest.raises(ValueError, match="same number"):
        plan.add("bias_gelu_erf", [1, 16], [16], args[:4])
    with pytest.raises(TypeError, match="dpctl.memory"):
        plan.add("bias_gelu_erf", [1, 16], [1, 16], [np.ones(4, np.float32), buf, buf, 4])
    with pytest.raises(ValueError, match="int32"):
        plan.add("bias_gelu_erf", [1, 16], [1, 16], [buf, buf, buf, 2 ** 40])
    with pytest.raises(ValueError, match="past the end"):
        plan.add("bias_gelu_erf", [1, 16], [1, 16], [(buf, 64), buf, buf, 4])
    with pytest.raises(ValueError, match="does not fit"):
        plan.run(st.queue, [(buf, np.ones(17, np.float32))], [])
    with pytest.raises(ValueError, match="C-contiguous"):
        plan.run(st.queue, [(buf, np.ones((4, 4), np.float32).T)], [])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(4, np.float32)
        ro.flags.writeable = False
        plan.run(st.queue, [], [(buf, ro)])
    assert len(plan) == 0
    with pytest.raises(RuntimeError, match="build failed"):
        _sycl.Program(st.queue, "this is not C++", {}, ["k"], [])


# ---- kernel paths the shared op tests do not reach -------------------------------------------------

@pytest.mark.parametrize("b,t,d,h", [(2, 7, 48, 2), (1, 50, 80, 1), (2, 17, 96, 3)],
                         ids=lambda v: str(v))
def test_attention_of_head_dims_without_a_vector_kernel(sb, b, t, d, h):
    """Head dims 24, 80, 32: the scalar kernel (24, 80) and the 32-wide vector one."""
    from test_ops import check, rand

    check("sycl", "attention", rand(np.random.default_rng(t), b, t, 3 * d, scale=2.0), h)


# ---- behaviour -------------------------------------------------------------------------------------

def test_concurrent_calls_agree(model):
    images = [parity.random_images(CFG, 1 + i % 3, seed=i) for i in range(6)]
    expected = [model(x) for x in images]
    results = [None] * len(images)

    def work(i):
        results[i] = model(images[i])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_many_batch_sizes_stay_correct(model):
    """More batch sizes than the plan cache keeps: evicted plans are rebuilt correctly."""
    weights = random_weights(CFG, seed=3)
    for batch in (1, 2, 3, 4, 5, 1, 6):
        images = parity.random_images(CFG, batch, seed=batch)
        oracle, tol = parity.reference_outputs(CFG, weights, images)
        assert parity.compare(model(images), oracle, tol).passed


# ---- environment: cache and missing device ----------------------------------------------------------

BUILD = ("from polyvit.backends import sycl_backend as sb; sb.device_state().program(); "
         "print(sb.cache_dir())")


def test_compiled_kernels_persist_across_processes(sb, tmp_path):
    """The first process on a machine compiles; the second finds both the compiled source and
    the device code in the cache, as the runtime's cache trace reports (no timings)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYCL_CACHE_DIR", "SYCL_CACHE_PERSISTENT")}
    env.update(XDG_CACHE_HOME=str(tmp_path), SYCL_CACHE_TRACE="5")  # persistent + compiler
    runs = [subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = runs
    assert first.stdout.strip() == str(tmp_path / "polyvit" / "sycl")
    assert "cache miss" in first.stderr and "device binary has been cached" in first.stderr
    assert "using cached device code IR" in second.stderr
    assert "using cached device binary" in second.stderr
    assert "has been cached" not in second.stderr  # nothing compiled again


def test_without_an_opencl_runtime_the_backend_says_why(sb):
    code = ("import polyvit; ok, why = polyvit.available_backends()['sycl']; "
            "print(ok); print(why)")
    out = run_python(code, OCL_ICD_FILENAMES="/nonexistent/libintelocl.so")
    assert out.returncode == 0, out.stderr
    ok, why = out.stdout.strip().split("\n", 1)
    assert ok == "False"
    assert "no SYCL device found" in why and "OCL_ICD_FILENAMES" in why
