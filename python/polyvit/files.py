"""Writing a file atomically: into a fresh name beside it, then renamed over it, so a reader (or
a process killed mid-write) sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder to write; on success it replaces `path`, on
    failure it is removed. Plain open() creates it, so it gets the umask's permissions like any
    file (tempfile.mkstemp would make it private, 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
