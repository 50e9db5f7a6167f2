"""Builds the Mojo kernels (mojo/) at first use and loads them through their C ABI.

The shared library is compiled by the pinned `mojo-compiler` on the machine that runs it (it
targets the host CPU) into a cache directory keyed by the sources' hash, the compiler's
`--version` and its effective target, so a changed source, compiler or CPU builds afresh and
everything else loads in milliseconds. Several processes may start at once: a file lock
(_native.build_lock) lets one of them build while the others wait, and the library appears
under its final name only by an atomic rename. A cached library that does not load, or whose
layout is not this Python's, is removed (one CacheWarning line) and rebuilt once.

The layout Python and Mojo share (the config array's fields, the weight table's slots, the
epilogue and GELU ids, the status kinds) is written by Python: layout_source() renders it from
the tables below into model_layout.mojo in each build's sources, and the library returns the
text's hash from polyvit_layout_hash(), compared at load.

Environment: POLYVIT_MOJO_COMPILER (the `mojo` executable; default: next to this Python, then PATH),
POLYVIT_CACHE_DIR (default: $XDG_CACHE_HOME/polyvit, else ~/.cache/polyvit),
POLYVIT_MOJO_SOURCES (a directory of sources laid out as mojo/ to build instead of the
packaged ones), POLYVIT_MOJO_FLAGS (extra compiler flags, e.g. "--target-cpu haswell").
"""

from __future__ import annotations

import contextlib
import ctypes
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
from typing import Any

import numpy as np

from ..config import GELU_FORMS, ViTConfig
from ..errors import BackendError
from ..weights import expected_shapes
from . import _native
from .base import LINEAR_EPILOGUES

INSTALL_HINT = "pip install 'polyvit[mojo]' (it installs mojo-compiler==1.2.0)"
ROOT_SOURCE = "polyvit_mojo.mojo"  # the C ABI; it imports vit_forward.mojo and kernels/
KERNELS = "kernels"                # one file per op, plus their shared helpers
LAYOUT_SOURCE = "model_layout.mojo"  # generated into each build's sources
LIB_NAME = "libpolyvit_mojo.dylib" if sys.platform == "darwin" else "libpolyvit_mojo.so"
BUILD_FLAGS = ("--emit", "shared-lib", "-O3")
COMPILER_TIMEOUT_S = 900


class MojoBuildError(BackendError):
    """The Mojo compiler rejected the kernels; the message carries its diagnostics."""


# ---- the layout Python and Mojo share ---------------------------------------------------------

# Status kinds of the C ABI: a kernel returns 0 or -(100 * kind + the rejected argument's
# 1-based position); the kind's number is its place here, plus one.
STATUS_KINDS = {
    "NULL": "a null address",
    "DIM": "a dimension that is zero, negative, too large or inconsistent",
    "SIZE": "a buffer smaller than its dimensions need",
    "THREAD": "a thread index outside the team",
    "CHOICE": "an unknown epilogue or GELU form",
    "CONFIG": "an inconsistent config",
    "LAYOUT": "a weight table that does not match the config",
}
BLOCK = "blocks.0."
# a config with every optional tensor and one block: its tensors name every slot
EVERY_TENSOR = ViTConfig(depth=1, qkv_bias=True, patch_norm_pre=True, patch_norm_post=True)


def config_slots() -> tuple[str, ...]:
    """The fields of the int64 config array, in order: every model field of the config
    (_native.config_fields) but its name. Booleans are 0 or 1, gelu is its index in GELU_FORMS,
    ln_eps holds the bits of a float64."""
    return tuple(k for k in _native.config_fields(ViTConfig()) if k != "name")


def config_array(cfg: ViTConfig) -> np.ndarray:
    """The config as the kernels read it (config_slots order), int64."""
    fields = _native.config_fields(cfg)
    values: list[int] = []
    for name in config_slots():
        value: Any = fields[name]
        if name == "gelu":
            value = GELU_FORMS.index(value)
        elif isinstance(value, float):
            value = int(np.float64(value).view(np.int64))
        values.append(int(value))
    return np.array(values, np.int64)


@lru_cache(maxsize=1)
def weight_slots() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(before the blocks, one block, after the blocks): the weight table's slots, named as in
    the shared format, in weights.expected_shapes' order. Derived from the config with every
    optional tensor, so a config without one leaves its slot empty; a block's names drop their
    "blocks.{i}." prefix, the table repeats them for each block."""
    names = list(expected_shapes(EVERY_TENSOR))
    inside = [i for i, n in enumerate(names) if n.startswith(BLOCK)]
    block = tuple(names[i][len(BLOCK):] for i in inside)
    return tuple(names[:inside[0]]), block, tuple(names[inside[-1] + 1:])


def linear_weights() -> frozenset[str]:
    """Slots holding the weight of a linear op (stored packed in panels): a 2-D or larger
    ".weight" of expected_shapes, the patch projection's (D, C, P, P) included."""
    return frozenset(n.removeprefix(BLOCK) for n, s in expected_shapes(EVERY_TENSOR).items()
                     if n.endswith(".weight") and len(s) >= 2)


def _ident(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _layout_body() -> str:
    first, block, last = weight_slots()
    lines = ["# the int64 config array (mojo_build.config_slots): booleans are 0 or 1, gelu is an",
             "# index into the GELU_* forms below, ln_eps holds the bits of a float64"]
    lines += [f"comptime CFG_{_ident(n)} = {i}" for i, n in enumerate(config_slots())]
    lines += [f"comptime CFG_LEN = {len(config_slots())}", "",
              "# the weight table: (address, float count) int64 pairs; an absent optional tensor",
              "# is an empty slot (0, 0). Slots before the blocks:"]
    lines += [f"comptime SLOT_{_ident(n)} = {i}  # {n}" for i, n in enumerate(first)]
    lines += [f"comptime FIRST_SLOTS = {len(first)}",
              "# each block's slots, block i from FIRST_SLOTS + i * BLOCK_SLOTS:"]
    lines += [f"comptime BLOCK_{_ident(n)} = {i}  # blocks.{{i}}.{n}" for i, n in enumerate(block)]
    lines += [f"comptime BLOCK_SLOTS = {len(block)}",
              "# slots after the blocks, from FIRST_SLOTS + depth * BLOCK_SLOTS:"]
    lines += [f"comptime LAST_{_ident(n)} = {i}  # {n}" for i, n in enumerate(last)]
    lines += [f"comptime LAST_SLOTS = {len(last)}", "",
              "# epilogues of the linear op (base.LINEAR_EPILOGUES) and GELU forms (GELU_FORMS)"]
    lines += [f"comptime EPI_{_ident(n)} = {i}" for i, n in enumerate(LINEAR_EPILOGUES)]
    lines += [f"comptime GELU_{_ident(n)} = {i}" for i, n in enumerate(GELU_FORMS)]
    lines += ["", "# status kinds: a kernel returns 0 or -(100 * kind + argument position)"]
    lines += [f"comptime ERR_{n} = {i}  # {m}"
              for i, (n, m) in enumerate(STATUS_KINDS.items(), start=1)]
    return "\n".join(lines) + "\n"


def layout_hash() -> int:
    """The hash the library must return from polyvit_layout_hash(): 60 bits of SHA-256 of the
    generated layout, so it is a positive int64."""
    return int(hashlib.sha256(_layout_body().encode()).hexdigest()[:15], 16)


def layout_source() -> str:
    """model_layout.mojo: the shared layout as comptime constants, and its hash."""
    return ("# Generated by polyvit.backends.mojo_build from Python's tables\n"
            "# (weights.expected_shapes, _native.config_fields, base.LINEAR_EPILOGUES,\n"
            "# config.GELU_FORMS); not in the repository: each build writes it into its\n"
            "# sources, and the cache key hashes it.\n\n"
            f"comptime LAYOUT_HASH = {layout_hash()}  # of the rest of this file\n\n"
            + _layout_body())


# ---- where things are -------------------------------------------------------------------------


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
    """The `mojo` executable: $POLYVIT_MOJO_COMPILER, else the one installed next to this
    Python, else the one on PATH. The pip wrapper in the environment's bin/ sets up the compiler's paths;
    the raw binary inside site-packages would not find its standard library."""
    explicit = os.environ.get("POLYVIT_MOJO_COMPILER")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    for scripts in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(scripts, "mojo")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mojo")


def cache_dir() -> Path:
    return _native.cache_root() / "mojo"


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
        explicit = os.environ.get("POLYVIT_MOJO_COMPILER")
        if explicit:
            return False, (f"POLYVIT_MOJO_COMPILER={explicit} is not an executable; unset it or "
                           f"{INSTALL_HINT}")
        return False, f"the Mojo compiler is not installed: {INSTALL_HINT}"
    try:
        compiler_version(compiler)
    except BackendError as exc:
        return False, str(exc)
    return True, ""


# ---- the cache --------------------------------------------------------------------------------


def build_flags() -> list[str]:
    return [*BUILD_FLAGS, *shlex.split(os.environ.get("POLYVIT_MOJO_FLAGS", ""))]


def cache_key(compiler: str, sources: Path) -> str:
    """"<compiler version>-<hash>": the hash covers every source (by its path under the source
    directory), the generated layout, the compiler's version and target, and the build flags."""
    version = compiler_version(compiler)
    digest = hashlib.sha256()
    for path in sorted(sources.rglob("*.mojo")):
        if path.name != LAYOUT_SOURCE:  # a stale generated copy; the build writes its own
            digest.update(path.relative_to(sources).as_posix().encode() + b"\0"
                          + path.read_bytes() + b"\0")
    for part in (layout_source(), version, effective_target(compiler, str(sources / ROOT_SOURCE)),
                 " ".join(build_flags())):
        digest.update(part.encode() + b"\0")
    slug = "-".join(re.findall(r"[a-z0-9.]+", version.lower()))  # "mojo-1.2.0-2016d0cd"
    return f"{slug}-{digest.hexdigest()[:20]}"


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build(compiler: str | None = None, sources: Path | None = None) -> Path:
    """The cached library for these sources and compiler, compiling it first if needed.

    Raises MojoBuildError with the compiler's diagnostics when the build fails, BackendError
    when the compiler or the sources are missing or the cache is not writable.
    """
    compiler = compiler or find_compiler()
    sources = sources or source_dir()
    if compiler is None:
        raise BackendError(f"the Mojo compiler is not installed: {INSTALL_HINT}")
    if sources is None:
        raise BackendError("the .mojo kernel sources are missing from this install of polyvit")
    entry = cache_dir() / cache_key(compiler, sources)
    library = entry / LIB_NAME
    if library.is_file():
        return library
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(_native.build_lock(entry))
    except OSError as exc:
        raise BackendError(f"cannot write the Mojo kernel cache {entry} ({exc}); set "
                           "POLYVIT_CACHE_DIR to a writable directory") from None
    with lock:
        if library.is_file():  # another process built it while we waited
            return library
        for stale in entry.glob("build-*"):  # left by a build that was killed; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        _compile(compiler, sources, entry)
    return library


def _compile(compiler: str, sources: Path, entry: Path) -> None:
    """Compile into a staging directory, then move build.txt and the library into entry."""
    staging = Path(tempfile.mkdtemp(prefix="build-", dir=entry))
    try:
        # compile a private copy: the sources the key hashed, even if the originals change
        src = staging / "src"
        shutil.copytree(sources, src, ignore=shutil.ignore_patterns("*.so", "*.dylib"))
        (src / LAYOUT_SOURCE).write_text(layout_source())
        start = time.perf_counter()
        done = _run([compiler, "build", str(src / ROOT_SOURCE), "-I", str(src / KERNELS),
                     *build_flags(), "-o", str(staging / LIB_NAME)], cwd=str(staging))
        if done.returncode != 0 or not (staging / LIB_NAME).is_file():
            message = "\n".join(s.strip() for s in (done.stderr, done.stdout) if s.strip())
            message = message.replace(str(src), str(sources))  # name the originals
            raise MojoBuildError(
                f"building the Mojo kernels with {compiler} ({compiler_version(compiler)}) "
                f"failed with exit status {done.returncode}:\n{message}")
        # build.txt carries the library's checksum: a load compares it before dlopen
        (staging / "build.txt").write_text(
            f"compiler: {compiler_version(compiler)}\nbuild seconds: "
            f"{time.perf_counter() - start:.1f}\nsources: {sources}\n"
            f"sha256: {_checksum((staging / LIB_NAME).read_bytes())}\n")
        # build.txt first: whoever sees the new library sees its checksum; the renames are
        # atomic, so readers see a whole file or none
        os.replace(staging / "build.txt", entry / "build.txt")
        os.replace(staging / LIB_NAME, entry / LIB_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---- loading, and healing a damaged entry -----------------------------------------------------


class UnusableLibrary(Exception):
    """A cached library that must not be used: why, in words."""


def open_library(library: Path) -> ctypes.CDLL:
    """dlopen the cached library after checking it is the file that was built (its checksum in
    build.txt), and then that it speaks this Python's layout (polyvit_layout_hash)."""
    try:
        data = library.read_bytes()
        recorded = re.search(r"^sha256: ([0-9a-f]{64})$",
                             (library.parent / "build.txt").read_text(), re.M)
    except (OSError, UnicodeDecodeError) as exc:
        raise UnusableLibrary(f"unreadable: {exc}") from None
    if recorded is None or recorded.group(1) != _checksum(data):
        raise UnusableLibrary("its checksum is not the one recorded when it was built")
    try:
        lib = ctypes.CDLL(str(library))
    except OSError as exc:
        raise UnusableLibrary(f"it does not load: {exc}") from None
    try:
        probe = lib.polyvit_layout_hash
    except AttributeError:
        _close(lib)
        raise UnusableLibrary("it has no polyvit_layout_hash: not a polyvit Mojo library") \
            from None
    probe.argtypes, probe.restype = [], ctypes.c_int64
    found, expected = probe(), layout_hash()
    if found != expected:
        _close(lib)
        raise UnusableLibrary(f"its layout hash {found:#x} is not this polyvit's {expected:#x}")
    return lib


def _close(lib: ctypes.CDLL) -> None:
    """Unload a library we refuse, so that a rebuilt file at the same path loads afresh (dlopen
    would hand back the loaded one)."""
    import _ctypes

    _ctypes.dlclose(lib._handle)


def _file_id(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load_healing() -> ctypes.CDLL:
    """Build (if needed) and open the library; if the cached one is unusable, remove it (one
    CacheWarning line) and build it again, once."""
    compiler, sources = find_compiler(), source_dir()
    library = build(compiler, sources)
    seen = _file_id(library)
    try:
        return open_library(library)
    except UnusableLibrary as exc:
        with _native.build_lock(library.parent):
            # another process may have healed it already: remove only the file we judged
            if seen is not None and _file_id(library) == seen:
                _native.discard_entry(library, str(exc))
    library = build(compiler, sources)
    try:
        return open_library(library)
    except UnusableLibrary as exc:
        raise BackendError(f"the Mojo kernels {library} are unusable even after rebuilding "
                           f"them ({exc}); delete {library.parent} and retry") from None


_load_lock = threading.Lock()
_library: ctypes.CDLL | None = None


def load_library() -> ctypes.CDLL:
    """The loaded kernel library, built first if needed; once per process."""
    global _library
    with _load_lock:
        if _library is None:
            ok, reason = availability()
            if not ok:
                raise BackendError(f"backend 'mojo' is not available: {reason}")
            _library = _load_healing()
        return _library
