"""The CUDA kernels and backend on the CPU emulator (cuda/emulator), on every run that has nvcc's
headers: the op-level suite and the end-to-end rule on the small configs. Emulation checks the
kernels' indexing, tiling, bounds, synchronisation and graph capture, not a GPU's timing, memory
model or instruction-level numerics; the GPU suite (tests/test_cuda_gpu.py) still needs a GPU.
ViT-S/32 and ViT-Ti/16 take minutes each when emulated; docs/backends/cuda.md runs them by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "cuda" / "emulator"
CUDA_HEADERS = Path("/usr/local/cuda/include/cuda_runtime_api.h")

pytestmark = pytest.mark.skipif(not CUDA_HEADERS.exists(),
                                reason=f"the emulator compiles against nvcc's headers "
                                       f"({CUDA_HEADERS.parent}); no CUDA toolkit here")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> Path:
    pytest.importorskip("pybind11", reason="the emulator build needs pybind11's headers")
    out = tmp_path_factory.mktemp("emulator")
    done = subprocess.run([sys.executable, str(EMULATOR / "build.py"), str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


def run_emulated(out: Path, *pytest_args: str) -> subprocess.CompletedProcess:
    # the backend is required: an emulated build that cannot load fails instead of skipping
    env = {**os.environ, "POLYVIT_REQUIRE_BACKENDS": "cuda"}
    return subprocess.run([sys.executable, str(EMULATOR / "run.py"), str(out), "-q",
                           "-p", "no:cacheprovider", *pytest_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)


def passed(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
    return summary


def test_every_cuda_op_passes_the_op_level_rule_on_the_emulator(emulated):
    """Every op in every precision: fp32 on every shape; bf16 and fp16 on the shapes with tails
    and the small ones (whole and partial tensor-core tiles, every epilogue), without the
    ViT-sized repeats, which a GPU run covers (docs/gpu.md). This keeps the emulated suites near
    their former minute of CI time."""
    passed(run_emulated(emulated, "tests/test_ops.py", "-k", "cuda-fp32 or ((cuda-bf16 or "
                        "cuda-fp16) and not 384 and not 3072 and not 224 and not 197)"))


def test_cuda_forward_passes_the_end_to_end_rule_on_the_emulator(emulated):
    """Every small config and variant: qkv bias or not, patch norms, tanh GELU, one head, in fp32
    against the float64 reference; the forward runs as a captured graph, its last block for the
    class token only. (bf16 end to end runs below, test_cuda_gpu's small config: 16 images
    instead of the shared test's 64, and the odd sizes' tails are the op suite's.)"""
    summary = passed(run_emulated(emulated, "tests/test_parity.py", "-k",
                                  "cuda and fp32-vit_test"))
    assert int(summary.split()[0]) >= 6, summary


def test_the_cuda_specific_tests_pass_on_the_emulator(emulated):
    """The class-query attention of the last block in every precision, graph replay, device
    strings, errors; and the whole contract test (options, batch-size cache, concurrent calls,
    bad images, bad op input in every precision) on the C++ plans; features, tokens and
    another image size as every backend gets them. (The device-array tests need a CUDA build
    of torch; the thread test is for backends with threads.)"""
    passed(run_emulated(emulated, "tests/test_cuda_gpu.py", "tests/test_backend_contract.py",
                        "tests/test_features.py", "tests/test_resize.py", "-k",
                        "not device_arrays and (test_cuda_gpu and not small_config[fp16] "
                        "or (cuda and not thread_counts))"))
