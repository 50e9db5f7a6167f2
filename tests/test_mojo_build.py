"""The Mojo backend's build at first use: availability reasons, compiler errors, the cache key,
reuse of a cached library, a damaged cache entry healing itself, and several processes building
or healing the same entry at once.

Compiling takes 6-18 s, so only two tests run the compiler to the end (a failing build stops at
its first error, and two processes build one library at once); the others copy the library this
process already built into a temporary cache, and where a damaged entry is rebuilt, the child
process's "compiler" copies that library in, as a build would (staging, then atomic renames)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import polyvit
from polyvit import BackendError
from polyvit.backends import _native, mojo_build
from polyvit.backends.mojo_backend import MojoBackend

REQUIRED = {n for n in os.environ.get("POLYVIT_REQUIRE_BACKENDS", "").split(",") if n}


@pytest.fixture(scope="module")
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


# ---- availability -----------------------------------------------------------------------------


def test_a_missing_compiler_says_what_to_install(monkeypatch):
    monkeypatch.delenv("POLYVIT_MOJO_COMPILER", raising=False)
    monkeypatch.setattr(mojo_build, "find_compiler", lambda: None)
    ok, reason = MojoBackend.availability()
    assert not ok
    assert "not installed" in reason and "pip install 'polyvit[mojo]'" in reason
    with pytest.raises(BackendError, match=r"backend 'mojo' is not available: .*pip install"):
        polyvit.load(None, backend="mojo", config="vit_test")


def test_a_bad_compiler_path_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYVIT_MOJO_COMPILER", str(tmp_path / "no-such-mojo"))
    ok, reason = MojoBackend.availability()
    assert not ok and "POLYVIT_MOJO_COMPILER=" in reason and "no-such-mojo" in reason


def test_a_compiler_that_does_not_run_is_reported(monkeypatch, tmp_path):
    broken = tmp_path / "mojo"
    broken.write_text("#!/bin/sh\necho 'mojo: cannot find libKGENCompilerRTShared' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("POLYVIT_MOJO_COMPILER", str(broken))
    ok, reason = MojoBackend.availability()
    assert not ok and "does not run" in reason and "exited 3" in reason
    assert "libKGENCompilerRTShared" in reason


def test_missing_sources_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYVIT_MOJO_SOURCES", str(tmp_path))
    ok, reason = MojoBackend.availability()
    assert not ok and "polyvit_mojo.mojo" in reason


def test_the_generated_layout_is_not_in_the_sources():
    """model_layout.mojo exists only in a build's staging copy, written from Python's tables."""
    assert not list(mojo_build.source_dir().rglob(mojo_build.LAYOUT_SOURCE))


def test_the_compiler_runs_without_telemetry():
    assert mojo_build.compiler_env()["MODULAR_TELEMETRY_ENABLED"] == "0"


# ---- building ---------------------------------------------------------------------------------


def test_a_build_failure_carries_the_compiler_message(compiler, sources, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(tmp_path / "cache"))
    kernel = sources / "kernels" / "layernorm.mojo"
    kernel.write_text(kernel.read_text().replace("sqrt(sq", "square_root(sq"))
    with pytest.raises(mojo_build.MojoBuildError) as info:
        mojo_build.build(compiler, sources)
    message = str(info.value)
    assert "building the Mojo kernels" in message and "failed" in message
    assert "error" in message and "square_root" in message
    assert str(kernel) in message  # the source's path, not the staging copy's
    entry = next((tmp_path / "cache" / "mojo").iterdir())
    assert not (entry / mojo_build.LIB_NAME).exists()
    assert not list(entry.glob("build-*")), "a failed build left its staging directory"


def test_the_cache_key_follows_sources_layout_and_compiler(compiler, sources, monkeypatch):
    key = mojo_build.cache_key(compiler, sources)
    version = mojo_build.compiler_version(compiler)
    assert key.startswith(version.lower().split(" (")[0].replace(" ", "-"))
    assert mojo_build.cache_key(compiler, sources) == key
    with open(sources / "kernels" / "linear.mojo", "a") as f:
        f.write("\n# a comment is a change: the key hashes the text\n")
    edited = mojo_build.cache_key(compiler, sources)
    assert edited != key
    layout = mojo_build.layout_source()
    monkeypatch.setattr(mojo_build, "layout_source", lambda: layout + "comptime EXTRA = 1\n")
    relaid = mojo_build.cache_key(compiler, sources)
    assert relaid != edited
    monkeypatch.setattr(mojo_build, "compiler_version", lambda c: "Mojo 9.9.9 (00000000)")
    other = mojo_build.cache_key(compiler, sources)
    assert other.startswith("mojo-9.9.9-") and other != relaid


def test_an_unwritable_cache_is_reported(compiler, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(BackendError, match="POLYVIT_CACHE_DIR to a writable directory"):
        mojo_build.build(compiler)


# ---- the cache: reuse, damage, healing --------------------------------------------------------

CFG = "vit_test"

# A child process: load a model and print its logits. argv: a directory holding a built
# library to copy in instead of compiling ("" compiles), seconds that copy takes.
CHILD = """
import json, os, shutil, sys, time
from pathlib import Path
import numpy as np
import polyvit
from polyvit import parity
from polyvit.backends import mojo_build
from polyvit.config import get_config
from polyvit.weights import random_weights

built, seconds = sys.argv[1], float(sys.argv[2])
if built:
    def copy_in(compiler, sources, entry):
        staging = entry / "build-copy"
        staging.mkdir()
        time.sleep(seconds)
        for name in ("build.txt", mojo_build.LIB_NAME):
            shutil.copy(Path(built) / name, staging / name)
        os.replace(staging / "build.txt", entry / "build.txt")
        os.replace(staging / mojo_build.LIB_NAME, entry / mojo_build.LIB_NAME)
        staging.rmdir()
    mojo_build._compile = copy_in
cfg = get_config(%r)
model = polyvit.load(random_weights(cfg, seed=3), backend="mojo", config=cfg, threads=2)
print(json.dumps(model(parity.random_images(cfg, 2, seed=4)).tolist()))
""" % CFG


def start_child(cache: Path, built: Path | str = "", seconds: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, POLYVIT_CACHE_DIR=str(cache), PYTHONWARNINGS="default")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(built), str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(child: subprocess.Popen) -> tuple[np.ndarray | None, str]:
    """(logits or None when the child failed, its stderr)."""
    out, err = child.communicate(timeout=600)
    if child.returncode != 0:
        return None, err
    return np.array(json.loads(out.strip().splitlines()[-1]), np.float32), err


@pytest.fixture(scope="module")
def built(compiler) -> Path:
    """The entry of the library this process uses (built here if no other test did)."""
    from polyvit.backends.mojo_backend import kernels

    kernels()
    return mojo_build.build().parent


@pytest.fixture(scope="module")
def logits(built) -> np.ndarray:
    from polyvit import parity
    from polyvit.config import get_config
    from polyvit.weights import random_weights

    cfg = get_config(CFG)
    model = polyvit.load(random_weights(cfg, seed=3), backend="mojo", config=cfg, threads=2)
    return model(parity.random_images(cfg, 2, seed=4))


def copy_cache(built: Path, cache: Path) -> Path:
    """A cache holding a copy of the built entry; returns the copy's library."""
    entry = cache / "mojo" / built.name
    entry.mkdir(parents=True)
    for name in ("build.txt", mojo_build.LIB_NAME):
        shutil.copy(built / name, entry / name)
    return entry / mojo_build.LIB_NAME


def test_a_cached_library_is_reused(built, tmp_path, monkeypatch):
    library = copy_cache(built, tmp_path / "cache")
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(tmp_path / "cache"))
    stamp = library.stat().st_mtime_ns
    assert mojo_build.build() == library and library.stat().st_mtime_ns == stamp
    assert (library.parent / "build.txt").read_text().startswith("compiler: Mojo")
    assert mojo_build.open_library(library).polyvit_layout_hash() == mojo_build.layout_hash()


def record_checksum(library: Path) -> None:
    """Make build.txt vouch for the library as it is now (so that dlopen, or the layout check,
    is what must catch it)."""
    info = library.parent / "build.txt"
    digest = mojo_build._checksum(library.read_bytes())
    lines = [f"sha256: {digest}" if line.startswith("sha256:") else line
             for line in info.read_text().splitlines()]
    info.write_text("\n".join(lines) + "\n")


def damage(library: Path, kind: str) -> None:
    rng = np.random.default_rng(7)
    size = library.stat().st_size
    if kind == "truncated":
        library.write_bytes(library.read_bytes()[:size // 2])
    elif kind == "random bytes":
        library.write_bytes(rng.bytes(size))
    elif kind == "empty":
        library.write_bytes(b"")
    elif kind == "no build record":
        (library.parent / "build.txt").unlink()
    elif kind == "random bytes, vouched for":  # dlopen refuses it
        library.write_bytes(rng.bytes(size))
        record_checksum(library)
    elif kind == "foreign library, vouched for":  # loads, but is not ours
        import _ctypes

        shutil.copy(_ctypes.__file__, library)
        record_checksum(library)
    else:
        raise AssertionError(kind)


DAMAGES = ["truncated", "random bytes", "empty", "no build record", "random bytes, vouched for",
           "foreign library, vouched for"]


def test_a_damaged_library_is_replaced(built, logits, tmp_path):
    """Each kind of damage, one child process each (at once): the damaged file is removed with
    one warning line, the library rebuilt, and the logits are the undamaged library's."""
    children = {}
    for i, kind in enumerate(DAMAGES):
        damage(copy_cache(built, tmp_path / str(i)), kind)
        children[kind] = start_child(tmp_path / str(i), built)
    for kind, child in children.items():
        out, err = finish(child)
        assert out is not None, f"{kind}: {err[-3000:]}"
        np.testing.assert_array_equal(out, logits, err_msg=kind)
        warnings = [line for line in err.splitlines() if "CacheWarning" in line]
        assert len(warnings) == 1 and "removed the unreadable cache entry" in warnings[0], \
            f"{kind}: {err[-3000:]}"


def test_two_processes_heal_one_entry_at_once(built, logits, tmp_path):
    damage(copy_cache(built, tmp_path / "cache"), "truncated")
    children = [start_child(tmp_path / "cache", built, seconds=1.0) for _ in range(2)]
    results = [finish(child) for child in children]
    for out, err in results:
        assert out is not None, err[-3000:]
        np.testing.assert_array_equal(out, logits)
    # the first to take the lock removes the damaged file; the other finds it gone or rebuilt
    assert sum(err.count("removed the unreadable cache entry") for _, err in results) == 1


def test_a_library_still_unusable_after_a_rebuild_is_an_error(built, tmp_path, monkeypatch):
    """A rebuild happens once: a second unusable library is reported, not rebuilt again."""
    monkeypatch.setenv("POLYVIT_CACHE_DIR", str(tmp_path / "cache"))

    def copy_in(compiler, sources, entry):
        damage(copy_cache(built, tmp_path / "spare"), "empty")
        shutil.copy(tmp_path / "spare" / "mojo" / built.name / "build.txt", entry / "build.txt")
        shutil.copy(tmp_path / "spare" / "mojo" / built.name / mojo_build.LIB_NAME,
                    entry / mojo_build.LIB_NAME)
        shutil.rmtree(tmp_path / "spare")

    monkeypatch.setattr(mojo_build, "_compile", copy_in)
    with pytest.warns(_native.CacheWarning, match="removed the unreadable cache entry"):
        with pytest.raises(BackendError, match="unusable even after rebuilding them"):
            mojo_build._load_healing()


def test_concurrent_first_builds_make_one_library(compiler, logits, tmp_path):
    """Two processes starting at once on an empty cache both succeed with one library."""
    children = [start_child(tmp_path / "cache") for _ in range(2)]
    for out, err in (finish(child) for child in children):
        assert out is not None, err[-3000:]
        np.testing.assert_array_equal(out, logits)
    libraries = list((tmp_path / "cache").rglob(mojo_build.LIB_NAME))
    assert len(libraries) == 1
    assert not list((tmp_path / "cache").rglob("build-*")), "staging directories left behind"
