"""The C++ backend built with AddressSanitizer and UndefinedBehaviorSanitizer
(-DPOLYVIT_SANITIZE=ON): the op-level shapes of tests/test_ops.py on every kernel set this CPU
runs, and full forward passes (vit_test, an odd-sized config, ViT-S/32; fp32, bf16, int8), in
a subprocess with the sanitizer runtime preloaded. It must exit cleanly with no report, and its
fp32 outputs must pass the parity rule against the float64 reference computed here.

The instrumented extension is built once per session into a temporary directory (about a
minute on 2 cores). The sanitized process loads only numpy and the extension: the references
come from this process, so torch never runs under the sanitizer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from polyvit import parity
from polyvit.backends.torch_backend import TorchOps
from polyvit.config import get_config
from polyvit.weights import random_weights
from test_ops import ATTENTION_SHAPES, EPILOGUES, LAYERNORM_SHAPES, LINEAR_SHAPES, rand

ROOT = Path(__file__).resolve().parents[1]
_cpu = pytest.importorskip("polyvit._cpu", reason="the C++ extension polyvit._cpu is not built")


def sanitizer_runtime() -> str | None:
    """Path of g++'s shared ASan runtime, or None when the compiler has none."""
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        return None
    out = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="session")
def sanitized(tmp_path_factory) -> tuple[Path, str]:
    """(the instrumented extension, the ASan runtime to preload)."""
    runtime = sanitizer_runtime()
    if runtime is None:
        pytest.skip("the C++ compiler has no AddressSanitizer runtime (libasan)")
    if not shutil.which("cmake"):
        pytest.skip("cmake is not installed")
    import pybind11

    build = tmp_path_factory.mktemp("cpp-sanitize")
    # ninja from PATH or from this venv (the test extra installs it), else cmake's default
    ninja = shutil.which("ninja") or shutil.which("ninja", path=str(Path(sys.executable).parent))
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    subprocess.run(["cmake", "-S", str(ROOT / "cpp_cpu"), "-B", str(build), *generator,
                    "-DPOLYVIT_SANITIZE=ON", f"-DPython_EXECUTABLE={sys.executable}",
                    f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--parallel", "2"], check=True,
                   capture_output=True)
    return next(build.glob("_cpu*.so")), runtime


# ---- the sanitized process -----------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import importlib.util, sys
    import numpy as np
    spec = importlib.util.spec_from_file_location("polyvit._cpu", sys.argv[1])
    cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu)
    data = dict(np.load(sys.argv[2], allow_pickle=True))
    out = {}
    for key, value in data.items():
        kind, isa = value[0], value[1]
        args = value[2]
        if kind == "linear":
            out[key] = cpu.linear(*args, isa=isa)
        elif kind == "layernorm":
            out[key] = cpu.layernorm(*args, isa=isa)
        elif kind == "attention":
            out[key] = cpu.attention(*args, isa=isa)
        elif kind == "bias_gelu":
            out[key] = cpu.bias_gelu(*args, isa=isa)
        elif kind == "forward":
            config, weights, precision, images = args
            model = cpu.Model(config, weights, precision, 2, isa)
            out[key] = model.forward(images)
            out[key + "/again"] = model.forward(images[:1].copy())  # a reused workspace
        elif kind == "linear_packed":
            w, b, precision, x, epilogue, r = args
            out[key] = cpu.Linear(w, b, precision, isa)(x, epilogue, r)
    np.savez(sys.argv[3], **out)
    """)


def cases() -> dict[str, tuple]:
    """name -> (kind, isa, args)."""
    isas = _cpu.isas().split()
    result: dict[str, tuple] = {}
    for isa in isas:
        for m, k, n in LINEAR_SHAPES:
            rng = np.random.default_rng(m * 7 + k * 3 + n)
            x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
            for epi in EPILOGUES:
                r = rand(rng, m, n) if epi == "residual" else None
                result[f"linear/{isa}/{m}x{k}x{n}/{epi}"] = ("linear", isa, (x, w, b, epi, r))
        for m, c in LAYERNORM_SHAPES:
            rng = np.random.default_rng(m + c)
            x = rand(rng, m, c, scale=3.0) + 10.0
            result[f"layernorm/{isa}/{m}x{c}"] = ("layernorm", isa, (
                x, 1 + rand(rng, c, scale=0.1), rand(rng, c, scale=0.1), 1e-6))
        for b, t, d, h in ATTENTION_SHAPES:
            rng = np.random.default_rng(b * t + d)
            result[f"attention/{isa}/{b}x{t}x{d}x{h}"] = ("attention", isa, (
                rand(rng, b, t, 3 * d, scale=2.0), h))
        for form in ("erf", "tanh"):
            rng = np.random.default_rng(9)
            result[f"bias_gelu/{isa}/{form}"] = ("bias_gelu", isa, (
                rand(rng, 37, 203, scale=3.0), rand(rng, 203), form))
    odd = get_config("vit_test").replace(embed_dim=45, num_heads=5, mlp_dim=99, image_size=40)
    precisions = ["fp32"] + [p for p, f in (("bf16", "avx512_bf16"), ("int8", "avx512_vnni"))
                             if _cpu.cpu_has(f)]
    for name, cfg in (("vit_test", get_config("vit_test")), ("odd", odd),
                      ("vit_small_patch32_224", get_config("vit_small_patch32_224"))):
        weights = random_weights(cfg, seed=1)
        images = parity.random_images(cfg, 2, seed=2)
        for precision in precisions if name != "vit_small_patch32_224" else ["fp32"]:
            result[f"forward/{name}/{precision}"] = ("forward", "auto", (
                cfg.to_dict(), weights, precision, images))
            if precision != "fp32":
                rng = np.random.default_rng(3)
                x, w, b = rand(rng, 33, 101), rand(rng, 37, 101, scale=0.1), rand(rng, 37)
                result[f"linear_packed/{name}/{precision}"] = ("linear_packed", "auto", (
                    w, b, precision, x, "gelu_erf", None))
    return result


def test_sanitized_ops_and_forward_are_clean_and_correct(sanitized, tmp_path):
    module, runtime = sanitized
    todo = cases()
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    packed = {}
    for key, (kind, isa, args) in todo.items():
        cell = np.empty(3, dtype=object)
        cell[0], cell[1], cell[2] = kind, isa, args
        packed[key] = cell
    np.savez(inputs, **packed)
    env = dict(os.environ, LD_PRELOAD=runtime, PYTHONPATH=str(ROOT / "python"),
               # CPython keeps some allocations until exit by design: no leak report
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(module), str(inputs), str(outputs)],
                          env=env, capture_output=True, text=True, timeout=600)
    report = proc.stderr[-6000:]
    assert proc.returncode == 0, f"sanitized run failed ({proc.returncode}):\n{report}"
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in proc.stderr, report

    got = dict(np.load(outputs))
    ref = TorchOps()
    for key, (kind, isa, args) in todo.items():
        out = got[key]
        assert np.isfinite(out).all(), key
        if kind in ("linear", "layernorm", "attention", "bias_gelu"):
            call = {"linear": lambda a: ref.linear(*a[:3], epilogue=a[3], residual=a[4]),
                    "layernorm": lambda a: ref.layernorm(*a),
                    "attention": lambda a: ref.attention(*a),
                    "bias_gelu": lambda a: ref.bias_gelu(*a[:2], form=a[2])}[kind]
            as64 = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
            oracle, fp32 = call(as64), call(args)
            err = float(np.max(np.abs(out - oracle)))
            assert err <= parity.tolerance(fp32, oracle), f"{key}: max|d| {err:.3g}"
        elif kind == "forward":
            config, weights, precision, images = args
            np.testing.assert_array_equal(got[key + "/again"][0], out[0])
            if precision == "fp32":
                from polyvit.config import ViTConfig

                oracle, tol = parity.reference_outputs(ViTConfig.from_dict(config), weights,
                                                       images)
                result = parity.compare(out, oracle, tol)
                assert result.passed, f"{key}: {result.describe()}"
