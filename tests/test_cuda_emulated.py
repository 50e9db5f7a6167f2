"""The CUDA kernels and backend on the CPU emulator (cuda/emulator), on every run that has nvcc's
headers: the op-level suite and the end-to-end rule on the small configs. Emulation checks the
kernels' indexing, tiling, bounds, synchronisation and graph capture, not a GPU's timing, memory
model or instruction-level numerics; the GPU suite (tests/test_cuda_gpu.py) still needs a GPU.
ViT-S/32 and ViT-Ti/16 take minutes each when emulated; docs/backends/cuda.md runs them by hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import lru_cache
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


def run_emulated(out: Path, *pytest_args: str, **emulator_env: str) -> subprocess.CompletedProcess:
    # the backend is required: an emulated build that cannot load fails instead of skipping
    env = {**os.environ, "POLYVIT_REQUIRE_BACKENDS": "cuda", **emulator_env}
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
                        "not device_arrays and not callers_current_device and (test_cuda_gpu and "
                        "not small_config[fp16] or (cuda and not thread_counts))"))


def test_the_backend_leaves_the_callers_device_as_it_was_on_two_emulated_devices(emulated):
    """Loading, running, device arrays, the cache and the ops on device 1 with device 0 current:
    every cudaSetDevice is undone (torch's current device is the thread's)."""
    passed(run_emulated(emulated, "tests/test_cuda_gpu.py", "-k", "callers_current_device",
                        EMU_DEVICES="2"))


# ---- the emulator's own checks, on tiny broken kernels (cuda/emulator/broken_kernels.cu) ----------


@lru_cache(maxsize=None)
def broken_kernels(out: Path, seed: str | None = None) -> dict[str, str]:
    """{case: what the emulator made of it} from one run of the self-test."""
    env = {k: v for k, v in os.environ.items() if k != "EMU_SEED"}
    if seed is not None:
        env["EMU_SEED"] = seed
    done = subprocess.run([str(out / "broken_kernels")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_the_emulator_poisons_shared_memory_at_every_block(emulated):
    """A block that reads shared memory before writing it must not find what the previous block
    left there (the emulator ran one block after another in the same static arrays, and poisoned
    dynamic shared memory once per launch)."""
    found = broken_kernels(emulated)
    assert found["stale_static_shared"] == "0"
    assert found["stale_dynamic_shared"] == "0"


def test_the_emulator_shuffles_blocks_and_threads_reproducibly(emulated):
    """A missing __syncthreads (thread t reads what t - 1 writes) and a kernel that needs its
    blocks in index order both passed when threads and blocks ran in index order (EMU_SEED=0
    still does, to tell whether a failure depends on the order); the default seed exposes them,
    the same way on every run."""
    shuffled = broken_kernels(emulated)
    assert int(shuffled["missing_barrier"]) > 0
    assert int(shuffled["block_order"]) > 0
    in_order = broken_kernels(emulated, "0")
    assert in_order["missing_barrier"] == "0" and in_order["block_order"] == "0"
    assert broken_kernels(emulated, "1") == shuffled  # the default seed, explicitly
    assert broken_kernels(emulated, "2")["missing_barrier"] != "0"


@pytest.mark.parametrize("case,error,text", [
    ("too_many_threads", "cudaErrorInvalidConfiguration", r"\(1025, 1, 1\) threads; a GPU runs 1 to 1024"),
    ("over_launch_bounds", "cudaErrorLaunchOutOfResources",
     r"128 threads exceeds the kernel's __launch_bounds__\(64\)"),
    ("static_shared_over_48k", "cudaErrorLaunchOutOfResources",
     "49156 bytes of static shared memory, above the 48 KiB limit"),
    ("dynamic_shared_without_optin", "cudaErrorInvalidValue",
     r"65536 bytes of dynamic shared memory, above the 49152 the kernel may use without "
     r"cudaFuncSetAttribute\(cudaFuncAttributeMaxDynamicSharedMemorySize\)"),
    ("dynamic_shared_with_optin", "cudaSuccess", "no error"),
    ("after_failures", "cudaSuccess", "no error"),  # a failed launch does not poison the next
])
def test_the_emulator_fails_launches_over_a_gpus_limits(emulated, case, error, text):
    """As a GPU does: the launch runs nothing and cudaGetLastError reports it, so the host code's
    CUDA_CHECK_LAUNCH raises CudaError with the emulator's reason."""
    name, _, message = broken_kernels(emulated)[case].partition(": ")
    assert name == error
    assert re.search(text, message), message
