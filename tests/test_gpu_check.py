"""benchmarks/gpu_check.sh as far as it runs without a GPU: arguments, the skip-build rule, the
JSON it writes, every GPU step reporting that it was skipped and why."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_without_a_gpu_every_step_is_skipped_and_the_json_says_so(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path),
                           "--no-gpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["gpu"] is None and report["why_no_gpu"] == "--no-gpu given"
    assert report["parity_held"] is None  # nothing tested is not a pass
    assert list(report["steps"]) == list(gpu_check.step_list())
    assert all(s == {"status": "skipped: no GPU"} for s in report["steps"].values())
    assert {"python", "torch", "triton", "nvcc", "commit"} <= set(report["versions"])
    assert "parity not tested" in done.stderr
    assert (tmp_path / "gpu_check.log").exists()


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_the_default_run_finds_no_gpu_here(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "o")})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "o" / "gpu_check.json").read_text())
    assert report["why_no_gpu"] and report["steps"]["build"]["status"] == "skipped: no GPU"


def test_an_unknown_step_is_refused(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path),
                           "--only", "warp-drive"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'warp-drive'" in done.stderr


def test_only_runs_the_steps_named(tmp_path):
    assert gpu_check.main(["--out", str(tmp_path), "--no-gpu", "--only", "racecheck",
                           "build"]) == 0
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert list(steps) == ["build", "racecheck"]  # the usual order, not the order given


def test_the_build_is_skipped_only_when_nothing_it_compiles_changed(tmp_path, monkeypatch):
    stamp = tmp_path / "build.stamp"
    digest = gpu_check.sources_hash()
    assert gpu_check.build_needed(digest, False, stamp) == (True, "no earlier build on this machine")
    stamp.write_text("0" * 64 + "\n")
    assert gpu_check.build_needed(digest, False, stamp)[1] == "sources changed since the last build"
    stamp.write_text(digest + "\n")
    imports = {"code": 1}
    monkeypatch.setattr(gpu_check.subprocess, "run",
                        lambda *a, **k: types.SimpleNamespace(returncode=imports["code"]))
    assert gpu_check.build_needed(digest, False, stamp)[1] == \
        "the last build's extension does not import"
    imports["code"] = 0
    assert gpu_check.build_needed(digest, False, stamp) == \
        (False, "sources unchanged since the last build")
    assert gpu_check.build_needed(digest, True, stamp) == (True, "--force-build")


def test_the_sources_hash_follows_the_cuda_sources(tmp_path, monkeypatch):
    (tmp_path / "cuda").mkdir()
    (tmp_path / "cuda" / "k.cu").write_text("a")
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)
    first = gpu_check.sources_hash()
    assert gpu_check.sources_hash() == first
    (tmp_path / "cuda" / "k.cu").write_text("b")
    assert gpu_check.sources_hash() != first


def test_pytest_counts_reads_the_summary_line():
    assert gpu_check.pytest_counts("3 failed, 120 passed, 4 skipped, 1 error in 9.1s") == \
        {"failed": 3, "passed": 120, "skipped": 4, "error": 1}
