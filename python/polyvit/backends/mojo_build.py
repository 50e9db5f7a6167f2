"""Builds the Mojo kernels (mojo/*.mojo) at first use and loads them through their C ABI.

The shared library is compiled by the pinned `mojo-compiler` on the machine that runs it (it
targets the host CPU) into a cache directory keyed by the sources' hash, the compiler's
`--version` and its effective target, so a changed source, compiler or CPU builds afresh and
everything else loads in milliseconds. Several processes may start at once: a file lock lets
one of them build while the others wait, and the library appears under its final name only by
an atomic rename, so no process ever loads a half-written file.

Environment: POLYVIT_MOJO (the `mojo` executable; default: next to this Python, then PATH),
POLYVIT_CACHE_DIR (default: $XDG_CACHE_HOME/polyvit, else ~/.cache/polyvit),
POLYVIT_MOJO_SOURCES (a directory of .mojo sources to build instead of the packaged ones),
POLYVIT_MOJO_FLAGS (extra compiler flags, e.g. "--target-cpu haswell" to build for AVX2).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

from ..errors import BackendError

INSTALL_HINT = "pip install 'polyvit[mojo]' (it installs mojo-compiler==1.2.0)"
ROOT_SOURCE = "polyvit_mojo.mojo"
LIB_NAME = "libpolyvit_mojo.dylib" if sys.platform == "darwin" else "libpolyvit_mojo.so"
BUILD_FLAGS = ("--emit", "shared-lib", "-O3")
COMPILER_TIMEOUT_S = 900


class MojoBuildError(BackendError):
    """The Mojo compiler rejected the kernels; the message carries its diagnostics."""


# ---- where things are --------------------------------------------------------------------------


def source_dir() -> Path | None:
    """The directory holding the kernels' .mojo sources, or None if this install lacks them."""
    override = os.environ.get("POLYVIT_MOJO_SOURCES")
    if override:
        return Path(override) if (Path(override) / ROOT_SOURCE).is_file() else None
    package = Path(__file__).resolve().parent.parent
    # an installed wheel carries them as polyvit/mojo; a source checkout has them at the top
    for candidate in (package / "mojo", package.parent.parent / "mojo"):
        if (candidate / ROOT_SOURCE).is_file():
            return candidate
    return None


def find_compiler() -> str | None:
    """The `mojo` executable: $POLYVIT_MOJO, else the one installed next to this Python, else
    the one on PATH. The pip wrapper in the environment's bin/ sets up the compiler's paths;
    the raw binary inside site-packages would not find its standard library."""
    explicit = os.environ.get("POLYVIT_MOJO")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    for scripts in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(scripts, "mojo")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mojo")


def cache_root() -> Path:
    explicit = os.environ.get("POLYVIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "polyvit"


def compiler_env() -> dict[str, str]:
    env = dict(os.environ)
    env["MODULAR_TELEMETRY_ENABLED"] = "0"  # no network lookups from a build
    return env


def _run(args: list[str], cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=compiler_env(), capture_output=True, text=True,
                          timeout=COMPILER_TIMEOUT_S, check=False)


@lru_cache(maxsize=None)
def compiler_version(compiler: str) -> str:
    """`mojo --version`, e.g. "Mojo 1.2.0 (2016d0cd)"; BackendError when it does not run."""
    try:
        done = _run([compiler, "--version"])
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendError(f"the Mojo compiler {compiler} does not run ({exc}); "
                           f"reinstall it: {INSTALL_HINT}") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise BackendError(f"the Mojo compiler {compiler} does not run (`mojo --version` exited "
                           f"{done.returncode}: {(done.stderr or done.stdout).strip()}); "
                           f"reinstall it: {INSTALL_HINT}")
    return done.stdout.strip()


@lru_cache(maxsize=None)
def effective_target(compiler: str, root: str) -> str:
    """The triple, CPU and features the compiler targets here (the library is host-specific)."""
    done = _run([compiler, "build", "--print-effective-target", root])
    return done.stdout.strip() if done.returncode == 0 else f"unknown ({done.returncode})"


def availability() -> tuple[bool, str]:
    """(True, "") when the kernels can be built and loaded here, else (False, what to do)."""
    if sys.platform not in ("linux", "darwin"):
        return False, f"the Mojo compiler does not run on {sys.platform} (Linux or macOS only)"
    if source_dir() is None:
        where = os.environ.get("POLYVIT_MOJO_SOURCES")
        return False, (f"POLYVIT_MOJO_SOURCES={where} has no {ROOT_SOURCE}" if where else
                       "the .mojo kernel sources are missing from this install of polyvit; "
                       "reinstall polyvit")
    compiler = find_compiler()
    if compiler is None:
        explicit = os.environ.get("POLYVIT_MOJO")
        if explicit:
            return False, f"POLYVIT_MOJO={explicit} is not an executable; unset it or {INSTALL_HINT}"
        return False, f"the Mojo compiler is not installed: {INSTALL_HINT}"
    try:
        compiler_version(compiler)
    except BackendError as exc:
        return False, str(exc)
    return True, ""


# ---- the cache ---------------------------------------------------------------------------------


def build_flags() -> list[str]:
    return [*BUILD_FLAGS, *shlex.split(os.environ.get("POLYVIT_MOJO_FLAGS", ""))]


def cache_key(compiler: str, sources: Path) -> str:
    """"<compiler version>-<hash>": the hash covers every source, the compiler's version and
    target, and the build flags."""
    version = compiler_version(compiler)
    digest = hashlib.sha256()
    for path in sorted(sources.glob("*.mojo")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for part in (version, effective_target(compiler, str(sources / ROOT_SOURCE)),
                 " ".join(build_flags())):
        digest.update(part.encode() + b"\0")
    slug = "-".join(re.findall(r"[a-z0-9.]+", version.lower()))  # "mojo-1.2.0-2016d0cd"
    return f"{slug}-{digest.hexdigest()[:20]}"


def build(compiler: str | None = None, sources: Path | None = None) -> Path:
    """The cached library for these sources and compiler, compiling it first if needed.

    Raises MojoBuildError with the compiler's diagnostics when the build fails, BackendError
    when the compiler or the sources are missing.
    """
    compiler = compiler or find_compiler()
    sources = sources or source_dir()
    if compiler is None:
        raise BackendError(f"the Mojo compiler is not installed: {INSTALL_HINT}")
    if sources is None:
        raise BackendError("the .mojo kernel sources are missing from this install of polyvit")
    entry = cache_root() / "mojo" / cache_key(compiler, sources)
    library = entry / LIB_NAME
    if library.is_file():
        return library
    try:
        entry.mkdir(parents=True, exist_ok=True)
        lock = open(entry / "build.lock", "w")
    except OSError as exc:
        raise BackendError(f"cannot write the Mojo kernel cache {entry} ({exc}); set "
                           "POLYVIT_CACHE_DIR to a writable directory") from None
    import fcntl

    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when we die
        if library.is_file():  # another process built it while we waited
            return library
        for stale in entry.glob("build-*"):  # left by a build that was killed; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=entry))
        try:
            # compile a private copy: the sources the key hashed, even if the originals change
            shutil.copytree(sources, staging / "src", ignore=shutil.ignore_patterns("*.so"))
            start = time.perf_counter()
            done = _run([compiler, "build", str(staging / "src" / ROOT_SOURCE), *build_flags(),
                         "-o", str(staging / LIB_NAME)], cwd=str(staging))
            if done.returncode != 0 or not (staging / LIB_NAME).is_file():
                message = "\n".join(s.strip() for s in (done.stderr, done.stdout) if s.strip())
                message = message.replace(str(staging / "src"), str(sources))  # name the originals
                raise MojoBuildError(
                    f"building the Mojo kernels with {compiler} "
                    f"({compiler_version(compiler)}) failed with exit status "
                    f"{done.returncode}:\n{message}")
            (staging / "build.txt").write_text(
                f"compiler: {compiler_version(compiler)}\nbuild seconds: "
                f"{time.perf_counter() - start:.1f}\nsources: {sources}\n")
            os.replace(staging / "build.txt", entry / "build.txt")
            os.replace(staging / LIB_NAME, library)  # atomic: readers see all of it or nothing
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return library


_load_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load_cached() -> "object":
    import ctypes

    library = build()
    try:
        return ctypes.CDLL(str(library))
    except OSError as exc:
        raise BackendError(f"cannot load the cached Mojo kernels {library} ({exc}); delete "
                           f"{library.parent} to rebuild them") from None


def load_library():
    """The loaded kernel library (a ctypes.CDLL), built first if needed; once per process."""
    with _load_lock:
        ok, reason = availability()
        if not ok:
            raise BackendError(f"backend 'mojo' is not available: {reason}")
        return _load_cached()
