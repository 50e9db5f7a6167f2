"""The C++ backend built with AddressSanitizer and UndefinedBehaviorSanitizer
(-DPOLYVIT_SANITIZE=ON): the op-level shapes of tests/test_ops.py on every kernel set this CPU
runs (fp32), the ops in bf16 and, on every kernel set, int8 on shapes with tails, and full
forward passes (vit_test, an odd-sized config, ViT-S/32; fp32, bf16, int8, and int8 with each
other kernel set's tiles on the small configs) through more batch sizes than the model keeps
(the last one large enough to fuse the MLP by rows), in a subprocess with the sanitizer
runtime preloaded. It must exit cleanly with no report, and
its outputs must pass the op rules and the fp32 parity rule against the float64 reference
computed here.

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
from polyvit.backends._native import BATCH_SIZES_KEPT, config_fields
from polyvit.backends.torch_backend import TorchBackend
from polyvit.config import get_config
from polyvit.weights import random_weights
from test_ops import (ATTENTION_SHAPES, EPILOGUES, LAYERNORM_SHAPES, LINEAR_SHAPES, PATCH_SHAPES,
                      rand)

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
    BATCH_SIZES_KEPT = int(sys.argv[4])
    spec = importlib.util.spec_from_file_location("polyvit._cpu", sys.argv[1])
    cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cpu)
    data = dict(np.load(sys.argv[2], allow_pickle=True))
    out = {}
    for key, value in data.items():
        kind, options, args = value[0], value[1], value[2]
        if kind == "forward":
            config, weights, images = args
            model = cpu.Model(config, weights, options["precision"], 2, options["isa"],
                              BATCH_SIZES_KEPT)
            out[key] = model.forward(images)
            for batch in options["batches"]:
                again = model.forward(np.resize(images, (batch,) + images.shape[1:]))
            out[key + "/again"] = again
            model.clear_cache()
        elif kind == "linear_packed":
            w, b, x, epilogue, r = args
            out[key] = cpu.Linear(w, b, options["precision"], options["isa"])(x, epilogue, r)
        else:
            out[key] = getattr(cpu, kind)(*args, **options)
    np.savez(sys.argv[3], **out)
    """)


def cases() -> dict[str, tuple]:
    """name -> (kind, options, args): an op of polyvit._cpu, "forward" of a Model or
    "linear_packed" (a Linear), with its keyword options (isa, precision)."""
    isas = _cpu.isas().split()
    result: dict[str, tuple] = {}
    bf16 = ["bf16"] if _cpu.cpu_has("avx512_bf16") else []
    reduced = bf16 + ["int8"]  # int8 runs with every kernel set (vpdpbusd, AVX2, portable)
    for isa, precision in ([(isa, "fp32") for isa in isas] + [("auto", p) for p in bf16]
                           + [(isa, "int8") for isa in isas]):
        where = f"{isa}/{precision}"
        options = {"isa": isa, "precision": precision}
        # the reduced precisions on the shapes with tails only (the full ones take long here),
        # and not layernorm and bias_gelu, which run the fp32 code in every precision
        tails = precision != "fp32"
        for m, k, n in LINEAR_SHAPES[6:] if tails else LINEAR_SHAPES:
            rng = np.random.default_rng(m * 7 + k * 3 + n)
            x, w, b = rand(rng, m, k), rand(rng, n, k, scale=k ** -0.5), rand(rng, n, scale=0.1)
            for epi in EPILOGUES:
                r = rand(rng, m, n) if epi == "residual" else None
                result[f"linear/{where}/{m}x{k}x{n}/{epi}"] = ("linear", options, (x, w, b, epi, r))
        for m, c in [] if tails else LAYERNORM_SHAPES:
            rng = np.random.default_rng(m + c)
            x = rand(rng, m, c, scale=3.0) + 10.0
            result[f"layernorm/{where}/{m}x{c}"] = ("layernorm", options, (
                x, 1 + rand(rng, c, scale=0.1), rand(rng, c, scale=0.1), 1e-6))
        for b, t, d, h in ATTENTION_SHAPES[2:] + [(1, 9, 27, 3)] if tails else ATTENTION_SHAPES:
            rng = np.random.default_rng(b * t + d)
            result[f"attention/{where}/{b}x{t}x{d}x{h}"] = ("attention", options, (
                rand(rng, b, t, 3 * d, scale=2.0), h))
        for form in () if tails else ("erf", "tanh"):
            rng = np.random.default_rng(9)
            result[f"bias_gelu/{where}/{form}"] = ("bias_gelu", options, (
                rand(rng, 37, 203, scale=3.0), rand(rng, 203), form))
        # im2col is the same code on every kernel set: full sizes once, on the first
        for b, c, s, p, d in PATCH_SHAPES if where == f"{isas[0]}/fp32" else PATCH_SHAPES[2:]:
            rng = np.random.default_rng(b + s + d)
            result[f"patch_embed/{where}/{b}x{c}x{s}x{p}x{d}"] = ("patch_embed", options, (
                rand(rng, b, c, s, s), rand(rng, d, c, p, p, scale=(c * p * p) ** -0.5),
                rand(rng, d, scale=0.1)))
    odd = get_config("vit_test").replace(embed_dim=45, num_heads=5, mlp_dim=99, image_size=40)
    for name, cfg in (("vit_test", get_config("vit_test")), ("odd", odd),
                      ("vit_small_patch32_224", get_config("vit_small_patch32_224"))):
        weights = random_weights(cfg, seed=1)
        images = parity.random_images(cfg, 2, seed=2)
        small = name != "vit_small_patch32_224"
        # the small configs run more batch sizes than a model keeps (one is dropped), the last
        # large enough for bf16 and int8 to fuse the MLP by rows (chunks of 48, 96 rows per
        # thread); ViT-S/32 one more batch size (another workspace)
        batches = list(range(1, BATCH_SIZES_KEPT + 2)) + [13] if small else [2]
        for precision in ["fp32"] + reduced if small else ["fp32"]:
            result[f"forward/{name}/{precision}"] = ("forward", {
                "isa": "auto", "precision": precision, "batches": batches},
                (config_fields(cfg), weights, images))
        for isa in isas[1:] if small else []:  # the int8 tiles auto does not pick
            result[f"forward/{name}/int8/{isa}"] = ("forward", {
                "isa": isa, "precision": "int8", "batches": batches},
                (config_fields(cfg), weights, images))
    for precision in reduced:  # the benchmarks' packed layer
        rng = np.random.default_rng(3)
        x, w, b = rand(rng, 33, 101), rand(rng, 37, 101, scale=0.1), rand(rng, 37)
        result[f"linear_packed/{precision}"] = ("linear_packed", {
            "isa": "auto", "precision": precision}, (w, b, x, "gelu_erf", None))
    return result


def test_sanitized_ops_and_forward_are_clean_and_correct(sanitized, tmp_path):
    module, runtime = sanitized
    todo = cases()
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    packed = {}
    for key, (kind, options, args) in todo.items():
        cell = np.empty(3, dtype=object)
        cell[0], cell[1], cell[2] = kind, options, args
        packed[key] = cell
    np.savez(inputs, **packed)
    env = dict(os.environ, LD_PRELOAD=runtime, PYTHONPATH=str(ROOT / "python"),
               # CPython keeps some allocations until exit by design: no leak report
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(module), str(inputs), str(outputs),
                           str(BATCH_SIZES_KEPT)],
                          env=env, capture_output=True, text=True, timeout=600)
    report = proc.stderr[-6000:]
    assert proc.returncode == 0, f"sanitized run failed ({proc.returncode}):\n{report}"
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in proc.stderr, report

    got = dict(np.load(outputs))
    oracle_ops, fp32_ops = TorchBackend.ops("fp64"), TorchBackend.ops("fp32")
    for key, (kind, options, args) in todo.items():
        out = got[key]
        assert np.isfinite(out).all(), key
        precision = options["precision"]
        if kind == "forward":
            config, weights, images = args
            np.testing.assert_array_equal(got[key + "/again"][:2], out)  # another workspace
            if precision == "fp32":
                from polyvit.config import ViTConfig

                oracle, tol = parity.reference_outputs(ViTConfig.from_dict(config), weights,
                                                       images)
                result = parity.compare(out, oracle, tol)
                assert result.passed, f"{key}: {result.describe()}"
            continue
        if kind == "linear_packed":
            w, b, x, epilogue, r = args
            kind, args = "linear", (x, w, b, epilogue, r)
        as64 = tuple(a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args)
        oracle = getattr(oracle_ops, kind)(*as64)
        bound = parity.tolerance(getattr(fp32_ops, kind)(*args), oracle)
        if precision != "fp32":
            bound = bound + parity.reduced_op_bound(kind, precision, args, oracle)
        err = np.abs(out - oracle)
        assert np.all(err <= bound), f"{key}: max|d| {err.max():.3g}"
