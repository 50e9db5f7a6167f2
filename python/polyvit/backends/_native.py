"""Glue every native backend shares, written once with one policy.

- the config as native code receives it (config_fields);
- where caches live (cache_root) and how a damaged cache entry is dropped (discard_entry), and
  a file lock for builds that several processes may start at once (build_lock);
- the default thread count (default_threads);
- the weight layout the GEMMs read (pack_panels, pad_vector, to_bf16_bits, aligned_empty);
- the per-batch-size state a model keeps (BatchCache);
- the array checks at an op's boundary (check_array).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterator, TypeVar

import numpy as np

if TYPE_CHECKING:
    from ..config import ViTConfig

ALIGNMENT = 64  # bytes: a cache line, one AVX-512 vector
BATCH_SIZES_KEPT = 4  # batch sizes whose buffers (and graphs, plans) a model keeps

T = TypeVar("T")


# ---- caches on disk ------------------------------------------------------------------------------

def cache_root() -> Path:
    """Where every backend keeps what it compiles: $POLYVIT_CACHE_DIR, else
    $XDG_CACHE_HOME/polyvit, else ~/.cache/polyvit. Each backend uses cache_root() / name."""
    explicit = os.environ.get("POLYVIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "polyvit"


class CacheWarning(RuntimeWarning):
    """A cache entry was unreadable and has been removed; it is being rebuilt."""


def discard_entry(path: Path, why: str) -> None:
    """Remove a damaged cache entry (file or folder) and say so in one warning line."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    # warn_explicit with a location that has no source text: the warning is this one line
    warnings.warn_explicit(f"removed the unreadable cache entry {path} ({why}); rebuilding it",
                           CacheWarning, "polyvit", 0)


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on folder/build.lock: one process builds a cache entry while the
    others wait, then find it built. The kernel releases the lock if its holder dies."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ---- the model, as native code receives it --------------------------------------------------------

def config_fields(cfg: "ViTConfig") -> dict[str, Any]:
    """The ViTConfig's model fields (no preprocessing) as a flat dict of ints, floats, bools and
    the gelu form: what every native backend receives, next to the weights by their names."""
    fields = cfg.to_dict()
    del fields["preprocessing"]
    return fields


# ---- threads -------------------------------------------------------------------------------------

def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS when it is a positive integer, else the cores this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cores()


# The OpenMP runtimes a native backend may link: libgomp (g++), LLVM's libomp, Intel's libiomp5,
# by the start of the mapped file's name (libgomp.so.1.0.0 behind the libgomp.so.1 link). A
# renamed private copy (libgomp-<hash>.so.1 in some wheels) is another runtime and does not count.
OPENMP_LIBRARIES = ("libgomp.so", "libomp.so", "libiomp5.so")


def openmp_loaded() -> bool:
    """Whether an OpenMP runtime a native backend links is mapped into this process already
    (it reads OMP_* variables once, as it loads). True when this cannot be told."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return True
    return any(os.path.basename(line.rstrip()).startswith(OPENMP_LIBRARIES)
               for line in maps.splitlines())


def sleep_at_barriers() -> bool:
    """OMP_WAIT_POLICY=passive for this process, for a model that shares the cores with other
    work (image decoding): an OpenMP thread that waits at a barrier sleeps instead of spinning,
    and the core goes to the decoders. vit-predict's pipeline ran 13-15 % more images per second
    with it on 2 cores; a model alone on the cores is faster spinning (batch-1 latency doubles
    passive), so this is the engines' choice, not the backends'. Takes effect only before the
    OpenMP runtime loads; an explicit OMP_WAIT_POLICY is kept. Returns whether it was set."""
    if "OMP_WAIT_POLICY" in os.environ or openmp_loaded():
        return False
    os.environ["OMP_WAIT_POLICY"] = "passive"
    return True


# ---- weight layout -------------------------------------------------------------------------------

def aligned_empty(count: int, dtype: Any = np.float32) -> np.ndarray:
    """A 1-D array of `count` items whose data starts on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(count * itemsize + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset:offset + count * itemsize].view(dtype)


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def pack_panels(weight: np.ndarray, width: int, precision: str = "fp32") -> np.ndarray:
    """(N, K) -> (ceil(N / width), K, width), 64-byte aligned: column panels of the weight,
    zero past N, so a GEMM tile reads `width` outputs' weights for one k in one run. Stored in
    the precision's type: fp32, bf16 (uint16 bits), fp16."""
    n, k = weight.shape
    panels = -(-n // width)
    padded = np.zeros((panels * width, k), np.float32)
    padded[:n] = weight
    shaped = padded.reshape(panels, width, k).transpose(0, 2, 1)
    if precision == "bf16":
        shaped = to_bf16_bits(shaped)
    dtype = {"fp32": np.float32, "bf16": np.uint16, "fp16": np.float16}[precision]
    out = aligned_empty(panels * k * width, dtype).reshape(panels, k, width)
    out[:] = shaped
    return out


def pad_vector(vector: np.ndarray | None, n: int, multiple: int) -> np.ndarray:
    """(N,) or None -> (ceil(N / multiple) * multiple,) float32, zero padded (None: all zeros),
    64-byte aligned: a packed GEMM adds whole vectors of its bias."""
    padded = aligned_empty(-(-n // multiple) * multiple)
    padded[:] = 0
    if vector is not None:
        padded[:n] = vector
    return padded


# ---- per-batch-size state ------------------------------------------------------------------------

class BatchCache(Generic[T]):
    """State built for one batch size (buffers, recorded launches, a CUDA graph), kept for the
    BATCH_SIZES_KEPT most recently used batch sizes; the least recently used one is dropped.
    Thread-safe; build(batch) runs outside any other batch's use."""

    def __init__(self, build: Callable[[int], T], capacity: int = BATCH_SIZES_KEPT) -> None:
        self._build = build
        self._capacity = capacity
        self._items: OrderedDict[int, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, batch: int) -> T:
        with self._lock:
            if batch in self._items:
                self._items.move_to_end(batch)
                return self._items[batch]
            item = self._build(batch)
            self._items[batch] = item
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
            return item

    def sizes(self) -> list[int]:
        """Cached batch sizes, least recently used first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# ---- op boundary ---------------------------------------------------------------------------------

def check_array(name: str, a: Any, shape: tuple[int | None, ...],
                dtype: Any = np.float32) -> np.ndarray:
    """a itself if it is a non-empty C-contiguous numpy array of `dtype` and `shape` (None: any
    size); otherwise TypeError (not an array, wrong dtype) or ValueError (shape, layout). Nothing
    is converted or copied: a wrong input is the caller's to fix, never silently changed."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        kind = np.dtype(dtype).name
        raise TypeError(f"{name} has dtype {a.dtype}, expected {kind}; "
                        f"pass {name}.astype(np.{kind})")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} has shape {a.shape}, expected ({want}{',' if len(shape) == 1 else ''})")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (a transposed or strided view); "
                         f"pass np.ascontiguousarray({name})")
    return a
