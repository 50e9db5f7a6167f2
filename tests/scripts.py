"""Running the installed console scripts from tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def script(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"console script {name} is not installed next to {sys.executable}"
    return found


def run(name: str, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([script(name), *argv], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(name: str, argv: list[str], message: str) -> None:
    """The script exits non-zero with exactly one `name: error: ...` line and no traceback."""
    done = run(name, *argv)
    assert done.returncode != 0
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith(f"{name}: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
