"""The triton backend beyond the shared suites (test_ops, test_parity, test_backend_contract and
test_bad_input run it like every backend): where its kernels run, what it refuses there, and
the standalone kernels and paths only it has."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import polyvit
from polyvit import backends, parity
from polyvit.backends.torch_backend import TorchBackend
from polyvit.config import get_config
from polyvit.errors import BackendError
from polyvit.weights import random_weights

from conftest import _backend_or_skip

GPU = torch.cuda.is_available()
CFG = get_config("vit_test")
ORACLE = TorchBackend.ops("fp64")


@pytest.fixture
def triton_ops():
    _backend_or_skip("triton")
    return backends.backend_class("triton").ops("fp32")


def _probe(env_change: dict, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_change)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.skipif(GPU, reason="a CUDA GPU runs the compiled kernels: nothing to refuse")
def test_without_a_gpu_or_the_interpreter_the_reason_is_one_line():
    pytest.importorskip("triton")
    done = _probe({}, "import polyvit; ok, why = polyvit.available_backends()['triton']; "
                      "print(ok); print(why)")
    assert done.returncode == 0, done.stderr[-2000:]
    ok, why = done.stdout.strip().split("\n")
    assert ok == "False"
    assert "no CUDA GPU" in why and "TRITON_INTERPRET=1" in why
    # and the error of asking for it says the same, with the backends that do run
    done = _probe({}, "import polyvit; polyvit.load(config='vit_test', backend='triton')")
    assert done.returncode != 0 and "TRITON_INTERPRET=1" in done.stderr


@pytest.mark.skipif(GPU, reason="on a GPU the interpreter is not how the tests run it")
def test_changing_triton_interpret_after_the_kernels_load_is_named(monkeypatch):
    _backend_or_skip("triton")
    backends.backend_class("triton").ops("fp32")  # imports the kernels, interpreted
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, why = backends.available_backends()["triton"]
    assert not ok and "TRITON_INTERPRET changed" in why


@pytest.mark.skipif(GPU, reason="a GPU runs every precision")
@pytest.mark.parametrize("precision,lacks", [("bf16", "no bf16 arithmetic"),
                                             ("tf32", "full fp32")])
def test_the_interpreter_refuses_what_it_cannot_compute(precision, lacks):
    _backend_or_skip("triton")
    with pytest.raises(BackendError, match=f"triton {precision} needs a GPU: .*{lacks}"):
        polyvit.load(random_weights(CFG, seed=1), backend="triton", precision=precision,
                     config=CFG)


@pytest.mark.skipif(GPU, reason="on a GPU vit-bench times it")
def test_vit_bench_leaves_the_interpreted_backend_out():
    _backend_or_skip("triton")
    from polyvit.cli.bench import resolve_backends

    names, statuses = resolve_backends(None)
    assert "triton" not in names and "cpp" in names
    assert statuses["triton"][0] is False and "interpreter" in statuses["triton"][1]
    with pytest.raises(BackendError, match="not timed"):
        resolve_backends(["triton"])


@pytest.mark.parametrize("m,c", [(7, 5), (50, 197), (3, 1000), (1, 1)], ids=str)
def test_standalone_softmax_matches_the_reference(triton_ops, m, c):
    x = (3 * np.random.default_rng(m + c).standard_normal((m, c))).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(x).double(), dim=1).numpy()
    np.testing.assert_allclose(triton_ops.softmax(x), expected, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("broadcast", [False, True])
def test_standalone_add_matches_numpy(triton_ops, broadcast):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    y = rng.standard_normal(37 if broadcast else (5, 37)).astype(np.float32)
    np.testing.assert_array_equal(triton_ops.add(x, y), x + y)
    with pytest.raises(ValueError, match="y has shape"):
        triton_ops.add(x, np.ascontiguousarray(y[..., :5]))


@pytest.mark.parametrize("b,t,d,h", [(2, 50, 384, 6), (1, 197, 192, 3), (3, 26, 45, 5)], ids=str)
def test_the_class_query_path_matches_the_reference(triton_ops, b, t, d, h):
    """The last block's attention: the class token's query alone against every key."""
    qkv = (2 * np.random.default_rng(t).standard_normal((b, t, 3 * d))).astype(np.float32)
    full = ORACLE.attention(qkv.astype(np.float64), h)[:, :1]
    tol = parity.tolerance(backends.backend_class("torch").ops("fp32").attention(qkv, h)[:, :1],
                           full)
    out = triton_ops.attention_class_query(qkv, h)
    assert out.shape == (b, 1, d)
    assert np.abs(out - full).max() <= tol


def test_run_takes_tensors_on_its_device_only():
    _backend_or_skip("triton")
    model = polyvit.load(random_weights(CFG, seed=1), backend="triton", config=CFG)
    images = parity.random_images(CFG, 2, seed=4)
    with pytest.raises(TypeError, match="torch tensor"):
        model.impl.run(images)
    x = torch.from_numpy(images).to(model.impl.device)
    np.testing.assert_array_equal(model.impl.run(x).cpu().numpy(), model(images))
    with pytest.raises(ValueError, match="shape"):
        model.impl.run(x[:, :, :16])


@pytest.mark.parametrize("script,args", [
    ("triton_model.py", ["--json", "{tmp}/model.json"]),
    ("triton_ops.py", ["--out", "{tmp}", "--ops", "linear_gelu", "attention", "patch_embed"]),
])
def test_the_benchmark_scripts_run(tmp_path, script, args):
    """The GPU benchmarks, run small (--smoke: the interpreter here, a tiny config on a GPU), so
    the scripts and their peers' weight mappings are checked on every CI run."""
    _backend_or_skip("triton")
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", script)
    done = subprocess.run([sys.executable, path, "--smoke", *[a.format(tmp=tmp_path) for a in args]],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    if script == "triton_model.py":
        rows = json.loads((tmp_path / "model.json").read_text())["rows"]
        # every peer that ran computed the same function (HF's weight mapping included)
        assert {r["runner"] for r in rows} >= {"polyvit triton fp32", "torch eager fp32"}
        assert all(r["max_abs_vs_triton_fp32"] < 1e-4 for r in rows), rows
    else:
        rows = json.loads((tmp_path / "ops.json").read_text())["rows"]
        assert {r["op"] for r in rows} == {"linear_gelu", "attention", "patch_embed"}
        assert all(r["max_abs_diff"] < 1e-4 for r in rows), rows


def test_vit_run_backend_triton_gives_the_reference_top5():
    _backend_or_skip("triton")
    from scripts import run

    tops = {}
    for backend in ("triton", "torch"):
        done = run("vit-run", "--backend", backend, "--config", "vit_test", "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        tops[backend] = [[p["index"] for p in item["topk"]]
                         for item in json.loads(done.stdout)["results"]]
    assert tops["triton"] == tops["torch"]


@pytest.mark.parametrize("triton_version,numpy_version,works", [
    ("3.6.0", "2.4.1", False), ("3.6.0", "2.3.5", True), ("3.9.0", "2.4.1", True)])
def test_an_interpreter_known_to_fail_with_this_numpy_is_refused(monkeypatch, triton_version,
                                                                 numpy_version, works):
    import importlib.metadata

    from polyvit.backends.triton import backend

    versions = {"triton": triton_version, "numpy": numpy_version}
    monkeypatch.setattr(importlib.metadata, "version", versions.__getitem__)
    ok, why = backend._interpreter_works()
    assert ok is works
    if not works:
        assert "numpy < 2.4" in why and "triton>=3.9" in why
