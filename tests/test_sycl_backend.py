"""The sycl backend's own behaviour, beyond the shared matrix (test_ops, test_parity,
test_backend_contract): device selection and the fp16 aspect, the native bridge's boundary, the
kernels' build-time tile sizes, the attention paths the shared ops do not reach, the persistent
kernel cache (reuse across processes, healing a damaged one, concurrent builds), and what
happens without a device."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the SYCL cache variables (this process's backend set them) and
    with extra: a fresh process then picks its own cache under POLYVIT_CACHE_DIR."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SYCL_CACHE_DIR", "SYCL_CACHE_PERSISTENT", "POLYVIT_CACHE_DIR",
                        "POLYVIT_SYCL_CHOSEN_CACHE")}
    return {**env, **extra}


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """code in a fresh interpreter (the SYCL runtime reads its environment once per process)."""
    return subprocess.run([sys.executable, "-c", code, *args], env=clean_env(**env),
                          capture_output=True, text=True, timeout=600)


# ---- devices -------------------------------------------------------------------------------------

def test_the_default_device_is_the_opencl_cpu(model):
    assert model.impl.device.startswith("opencl:cpu")


def test_dpctl_imported_before_polyvit_is_named_as_the_reason_for_no_device(sb, tmp_path):
    """`import ray` imports dpctl; the error then says so and how to fix it, and importing Ray
    through polyvit (import_ray) readies the runtime first, so the device is found."""
    env = {k: v for k, v in clean_env(POLYVIT_CACHE_DIR=str(tmp_path)).items()
           if k != "OCL_ICD_FILENAMES"}
    load = ("try:\n    polyvit.load(None, backend='sycl', config='vit_test')\n    print('loaded')\n"
            "except polyvit.BackendError as exc:\n    print(exc)\n")
    code = "import dpctl, polyvit\n" + load
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "dpctl was imported before polyvit" in done.stdout, done.stdout + done.stderr
    assert "OCL_ICD_FILENAMES=/" in done.stdout
    code = ("from polyvit.backends.sycl_backend import prepare_environment\n"
            "prepare_environment()\nimport dpctl, polyvit\n" + load)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "loaded", done.stdout + done.stderr


def test_a_filter_string_selects_the_device(sb):
    m = polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG,
                     device="opencl:cpu:0")
    assert m.impl.device == "opencl:cpu:0"


def test_a_device_that_is_not_here_is_an_error_listing_those_that_are(sb):
    with pytest.raises(BackendError, match=r"no SYCL device matches 'level_zero:gpu'.*opencl:cpu"):
        polyvit.load(random_weights(CFG, seed=3), backend="sycl", config=CFG,
                     device="level_zero:gpu")
    with pytest.raises(BackendError, match="no SYCL device matches"):
        sb.SyclBackend.ops("fp32", device="level_zero:gpu")


def test_fp16_is_offered_where_the_device_has_the_aspect(sb):
    ok, why = sb.SyclBackend.supports("fp16")
    assert ok == sb.device_state().device.has_aspect_fp16, why
    assert ok or "no fp16 support" in why
    assert sb.SyclBackend.supports("bf16") == (True, "")  # bf16 panels widen in software


def test_vit_run_takes_a_device(sb, capsys):
    from polyvit.cli.run import main

    assert main(["--backend", "sycl", "--config", "vit_test", "--device", "opencl:cpu",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backend"] == "sycl"
    assert main(["--backend", "sycl", "--config", "vit_test", "--device", "level_zero:gpu"]) == 1
    assert "no SYCL device matches" in capsys.readouterr().err


# ---- the native bridge and the kernel sources ----------------------------------------------------

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


def test_the_kernels_take_their_tile_sizes_from_the_backend(sb):
    """The tile sizes live in sycl_backend.py only: the sources do not build without them."""
    from polyvit import _sycl

    st = sb.device_state()
    headers, source = sb._kernel_sources()
    options = [o for o in st.build_options("fp32") if not o.startswith("-DPOLYVIT_PANEL=")]
    with pytest.raises(RuntimeError, match="POLYVIT_PANEL"):
        _sycl.Program(st.queue, source, headers, ["layernorm"], options)
    for name in ("PANEL", "ROWS", "QUERIES", "VECTOR"):
        assert not re.search(rf"\b{name}\s*=\s*\d", "\n".join([source, *headers.values()])), \
            f"a kernel source repeats {name}"


# ---- attention paths the shared op tests do not reach --------------------------------------------

@pytest.mark.parametrize("b,t,d,h", [(2, 7, 48, 2), (1, 50, 80, 1), (2, 17, 96, 3)], ids=str)
def test_attention_of_head_dims_without_a_vector_kernel(sb, b, t, d, h):
    """Head dims 24, 80, 32: the scalar kernel (24, 80) and the 32-wide vector one."""
    from test_ops import check, rand

    check(("sycl", "fp32"), "attention", rand(np.random.default_rng(t), b, t, 3 * d, scale=2.0),
          h)


@pytest.mark.parametrize("b,t,d,h", [(2, 50, 384, 6), (1, 197, 192, 3), (3, 17, 48, 3),
                                     (2, 7, 48, 2), (1, 1, 64, 1)], ids=str)
def test_attention_for_the_class_query(sb, b, t, d, h):
    """The last block's attention: the class token's query (B, D) against keys and values
    (B, T, 2D) of every token, as reference.attention(qkv, heads, queries=1) computes it."""
    import torch
    from test_ops import rand

    from polyvit import reference

    qkv = rand(np.random.default_rng(b * t + d), b, t, 3 * d, scale=2.0)
    q, kv = np.ascontiguousarray(qkv[:, 0, :d]), np.ascontiguousarray(qkv[:, :, d:])
    st = sb.device_state()
    q_mem, kv_mem, out_mem = st.upload(q), st.upload(kv), st.alloc(b * d * 4)
    scratch = st.alloc(sb.attention_scratch(b, t, 1, h, d // h))
    plan = st.plan()
    sb._attention(plan, q_mem, d, kv_mem, 2 * d, out_mem, scratch, b, t, 1, h, d // h)
    out = np.empty((b, 1, d), np.float32)
    plan.run(st.queue, [], [(out_mem, out)])
    with torch.inference_mode():
        oracle = reference.attention(torch.from_numpy(qkv).double(), h, queries=1).numpy()
        fp32 = reference.attention(torch.from_numpy(qkv), h, queries=1).numpy()
    tol = parity.tolerance(fp32, oracle)
    err = float(np.abs(out - oracle).max())
    assert err <= tol, f"class-query attention {(b, t, d, h)}: max|d| {err:.3g} > {tol:.3g}"


# ---- the persistent kernel cache -----------------------------------------------------------------

LOGITS = """
import sys
import numpy as np
import polyvit
from polyvit import parity
from polyvit.config import get_config
from polyvit.weights import random_weights
cfg = get_config("vit_test")
model = polyvit.load(random_weights(cfg, seed=3), backend="sycl", config=cfg)
np.save(sys.argv[1], model(parity.random_images(cfg, 2, seed=1)))
"""
WARNING = "removed the unreadable cache entry"


def logits_in_fresh_process(cache: Path, out: Path) -> tuple[np.ndarray, str]:
    """(logits, stderr) of a fresh process whose cache root is `cache`."""
    run = run_python(LOGITS, str(out), POLYVIT_CACHE_DIR=str(cache))
    assert run.returncode == 0, run.stderr
    return np.load(out), run.stderr


@pytest.fixture(scope="module")
def built_cache(sb, tmp_path_factory):
    """(a cache root holding the kernels a first process built, that process's logits)."""
    root = tmp_path_factory.mktemp("sycl-cache")
    logits, _ = logits_in_fresh_process(root, root.parent / "first.npy")
    return root, logits


def test_compiled_kernels_persist_across_processes(sb, tmp_path):
    """The first process on a machine compiles; the second finds both the compiled source and
    the device code in the cache, as the runtime's cache trace reports (no timings)."""
    build = ("from polyvit.backends import sycl_backend as sb; sb.device_state().program(); "
             "print(sb.cache_dir())")
    runs = [run_python(build, POLYVIT_CACHE_DIR=str(tmp_path), SYCL_CACHE_TRACE="5")
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = runs
    assert first.stdout.strip() == str(tmp_path / "sycl")
    assert "cache miss" in first.stderr and "device binary has been cached" in first.stderr
    assert "using cached device code IR" in second.stderr
    assert "using cached device binary" in second.stderr
    assert "has been cached" not in second.stderr  # nothing compiled again
    assert WARNING not in first.stderr + second.stderr


CHOSEN = ("from polyvit.backends import sycl_backend as sb; import os; sb._dpctl(); "
          "print(sb._managed_cache); print(os.environ['SYCL_CACHE_DIR'])")


def test_a_child_process_chooses_its_own_cache_and_leaves_a_users_alone(sb, tmp_path):
    """The SYCL cache variables a polyvit parent set are inherited by its children: a child
    picks its own cache root again (and manages it); variables the user set are the user's."""
    parent = str(tmp_path / "parent" / "sycl" / "runtime")
    inherited = {"SYCL_CACHE_PERSISTENT": "1", "SYCL_CACHE_DIR": parent,
                 "POLYVIT_SYCL_CHOSEN_CACHE": parent}
    run = run_python(CHOSEN, POLYVIT_CACHE_DIR=str(tmp_path / "child"), **inherited)
    assert run.returncode == 0, run.stderr
    own = str(tmp_path / "child" / "sycl" / "runtime")
    assert run.stdout.split() == [own, own]
    users = {"SYCL_CACHE_PERSISTENT": "1", "SYCL_CACHE_DIR": str(tmp_path / "mine")}
    run = run_python(CHOSEN, POLYVIT_CACHE_DIR=str(tmp_path / "child"), **users)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None", str(tmp_path / "mine")]


# The kinds of file in the cache: the runtime's compiled IR, its device code and the source key
# stored beside it, and the manifest of what the last build wrote. (The runtime's access times
# it rewrites itself and reads only to evict: nothing there to heal.)
CACHE_FILES = {
    "ir": lambda name: name == "ir.bin",
    "device_code": lambda name: re.fullmatch(r"\d+\.bin", name) is not None,
    "device_code_key": lambda name: name.endswith(".src"),
    "manifest": lambda name: name == "manifest.json",
}
CORRUPTIONS = {
    "truncated": lambda data, rng: data[:len(data) // 2],
    "random_bytes": lambda data, rng: rng.bytes(max(len(data), 16)),
    "empty": lambda data, rng: b"",
}


# Each corruption once, spread over the kinds of file that matter: the device code, its IR, the
# source key, the manifest. The cases heal in parallel processes (each heal is a kernel build).
DAMAGE = [("device_code", "truncated"), ("ir", "random_bytes"), ("device_code_key", "empty"),
          ("manifest", "random_bytes")]


def in_parallel(caches: list[Path], outs: list[Path]) -> list[tuple[int, str]]:
    """(exit status, stderr) of one fresh LOGITS process per cache, all run at once."""
    runs = [subprocess.Popen([sys.executable, "-c", LOGITS, str(out)],
                             env=clean_env(POLYVIT_CACHE_DIR=str(cache)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for cache, out in zip(caches, outs)]
    stderrs = [run.communicate(timeout=600)[1] for run in runs]
    return [(run.returncode, stderr) for run, stderr in zip(runs, stderrs)]


def test_a_damaged_cache_is_rebuilt_with_the_same_logits(built_cache, tmp_path):
    """Every damaged cache is detected, removed with one warning line and rebuilt: the next
    process gets the same logits as before, and the one after that finds the cache whole."""
    pristine, logits = built_cache
    caches = [tmp_path / f"{kind}-{corruption}" for kind, corruption in DAMAGE]
    outs = [cache.with_suffix(".npy") for cache in caches]
    rng = np.random.default_rng(0)
    for cache, (kind, corruption) in zip(caches, DAMAGE):
        shutil.copytree(pristine, cache)
        files = [p for p in cache.rglob("*") if p.is_file() and CACHE_FILES[kind](p.name)]
        assert files, f"no {kind} file in the cache"
        for path in files:
            path.write_bytes(CORRUPTIONS[corruption](path.read_bytes(), rng))
    for expect_warning in (True, False):  # healed, then healed for good
        for (kind, corruption), out, (status, stderr) in zip(DAMAGE, outs,
                                                             in_parallel(caches, outs)):
            case = f"{kind} {corruption}: "
            assert status == 0, case + stderr
            assert stderr.count(WARNING) == int(expect_warning), case + stderr
            np.testing.assert_array_equal(np.load(out), logits, err_msg=case)


def test_two_processes_building_at_once_both_succeed(built_cache, tmp_path):
    _, logits = built_cache
    runs = [subprocess.Popen([sys.executable, "-c", LOGITS, str(tmp_path / f"{i}.npy")],
                             env=clean_env(POLYVIT_CACHE_DIR=str(tmp_path / "cache")),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]
    for i, run in enumerate(runs):
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
        assert WARNING not in stderr, stderr  # the waiting one found the cache whole
        np.testing.assert_array_equal(np.load(tmp_path / f"{i}.npy"), logits)


# ---- without a device ----------------------------------------------------------------------------

def test_without_an_opencl_runtime_the_backend_says_why(sb):
    code = ("import polyvit; ok, why = polyvit.available_backends()['sycl']; "
            "print(ok); print(why)")
    out = run_python(code, OCL_ICD_FILENAMES="/nonexistent/libintelocl.so")
    assert out.returncode == 0, out.stderr
    ok, why = out.stdout.strip().split("\n", 1)
    assert ok == "False"
    assert "no SYCL device found" in why and "OCL_ICD_FILENAMES" in why
