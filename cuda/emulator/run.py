"""Runs pytest (or a script) with polyvit taken from an emulator build instead of the installed
package: python cuda/emulator/run.py OUT [pytest args] | OUT --script file.py [args]."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1]).resolve()
    # An editable install puts a finder for polyvit ahead of sys.path: drop it for this process.
    sys.meta_path[:] = [f for f in sys.meta_path if "polyvit" not in type(f).__module__
                        and "editable" not in type(f).__module__]
    sys.path.insert(0, str(out / "pkg"))
    import polyvit

    if not polyvit.__file__.startswith(str(out)):
        raise SystemExit(f"polyvit still comes from {polyvit.__file__}")
    if sys.argv[2:3] == ["--script"]:
        sys.argv = sys.argv[3:]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return 0
    import pytest

    return pytest.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
