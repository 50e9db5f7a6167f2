"""The Mojo backend's build at first use: availability reasons, compiler errors, the cache key,
reuse of a cached library, and several processes building the same library at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import polyvit
from polyvit import BackendError
from polyvit.backends import mojo_build
from polyvit.backends.mojo_backend import MojoBackend

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}


@pytest.fixture
def compiler() -> str:
    """The Mojo compiler, or a skip (a failure where CI requires the backend)."""
    ok, reason = mojo_build.availability()
    if not ok:
        if "mojo" in REQUIRED:
            pytest.fail(f"backend mojo is required here but unavailable: {reason}")
        pytest.skip(f"backend mojo unavailable: {reason}")
    return mojo_build.find_compiler()


@pytest.fixture
def sources(tmp_path) -> Path:
    """A private copy of the kernel sources, free to edit."""
    copy = tmp_path / "src"
    shutil.copytree(mojo_build.source_dir(), copy, ignore=shutil.ignore_patterns("*.txt"))
    return copy


# ---- availability ------------------------------------------------------------------------------


def test_a_missing_compiler_says_what_to_install(monkeypatch):
    monkeypatch.delenv("POLYVIT_MOJO", raising=False)
    monkeypatch.setattr(mojo_build, "find_compiler", lambda: None)
    ok, reason = MojoBackend.availability()
    assert not ok
    assert "not installed" in reason and "pip install 'polyvit[mojo]'" in reason
    with pytest.raises(BackendError, match=r"backend 'mojo' is not available: .*pip install"):
        polyvit.load(None, backend="mojo", config="vit_test")


def test_a_bad_compiler_path_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYVIT_MOJO", str(tmp_path / "no-such-mojo"))
    ok, reason = MojoBackend.availability()
    assert not ok and "POLYVIT_MOJO=" in reason and "no-such-mojo" in reason


def test_a_compiler_that_does_not_run_is_reported(monkeypatch, tmp_path):
    broken = tmp_path / "mojo"
    broken.write_text("#!/bin/sh\necho 'mojo: cannot find libKGENCompilerRTShared' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("POLYVIT_MOJO", str(broken))
    ok, reason = MojoBackend.availability()
    assert not ok and "does not run" in reason and "exited 3" in reason
    assert "libKGENCompilerRTShared" in reason


def test_missing_sources_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYVIT_MOJO_SOURCES", str(tmp_path))
    ok, reason = MojoBackend.availability()
    assert not ok and "polyvit_mojo.mojo" in reason


def test_the_compiler_runs_without_telemetry():
    assert mojo_build.compiler_env()["MODULAR_TELEMETRY_ENABLED"] == "0"


# ---- building ----------------------------------------------------------------------------------


def test_a_build_failure_carries_the_compiler_message(compiler, sources, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(tmp_path / "cache"))
    text = (sources / "layernorm.mojo").read_text()
    (sources / "layernorm.mojo").write_text(text.replace("sqrt(sq", "square_root(sq"))
    with pytest.raises(mojo_build.MojoBuildError) as info:
        mojo_build.build(compiler, sources)
    message = str(info.value)
    assert "building the Mojo kernels" in message and "failed" in message
    assert "error" in message and "square_root" in message
    assert str(sources / "layernorm.mojo") in message  # the source's path, not the staging copy
    entry = next((tmp_path / "cache" / "mojo").iterdir())
    assert not (entry / mojo_build.LIB_NAME).exists()
    assert not list(entry.glob("build-*")), "a failed build left its staging directory"


def test_the_cache_key_follows_sources_and_compiler_version(compiler, sources, monkeypatch):
    key = mojo_build.cache_key(compiler, sources)
    version = mojo_build.compiler_version(compiler)
    assert key.startswith(version.lower().split(" (")[0].replace(" ", "-"))
    assert mojo_build.cache_key(compiler, sources) == key
    with open(sources / "gemm.mojo", "a") as f:
        f.write("\n# a comment is a change: the key hashes the text\n")
    edited = mojo_build.cache_key(compiler, sources)
    assert edited != key
    monkeypatch.setattr(mojo_build, "compiler_version", lambda c: "Mojo 9.9.9 (00000000)")
    other = mojo_build.cache_key(compiler, sources)
    assert other.startswith("mojo-9.9.9-") and other != edited


def test_a_cached_library_is_reused(compiler, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(tmp_path / "cache"))
    first = mojo_build.build(compiler)
    stamp = first.stat().st_mtime_ns
    again = mojo_build.build(compiler)
    assert again == first and again.stat().st_mtime_ns == stamp
    assert (first.parent / "build.txt").read_text().startswith("compiler: Mojo")


CHILD = """
import sys, numpy as np
from polyvit.backends import mojo_build
from polyvit.backends.mojo_backend import MojoBackend
path = mojo_build.build()
ops = MojoBackend.ops()
x = np.ones((3, 4), np.float32); w = np.ones((5, 4), np.float32)
assert float(ops.linear(x, w, None)[0, 0]) == 4.0
print(path)
"""


def test_concurrent_first_builds_make_one_library(compiler, tmp_path):
    """Processes starting at once on an empty cache all load a complete library."""
    env = dict(os.environ, POLYVIT_CACHE_DIR=str(tmp_path / "cache"))
    children = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [child.communicate(timeout=600) + (child.returncode,) for child in children]
    for out, err, code in results:
        assert code == 0, err
    paths = {out.strip() for out, _, _ in results}
    assert len(paths) == 1
    libraries = list((tmp_path / "cache").rglob(mojo_build.LIB_NAME))
    assert [str(p) for p in libraries] == list(paths)
    assert not list((tmp_path / "cache").rglob("build-*")), "staging directories left behind"


def test_an_unwritable_cache_is_reported(compiler, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(BackendError, match="POLYVIT_CACHE_DIR to a writable directory"):
        mojo_build.build(compiler)
