"""Locate what the SYCL bridge compiles against, for sycl/CMakeLists.txt.

Needs the intel-sycl-rt wheel (SYCL headers and libsycl.so) and dpctl (dpctl4pybind11.hpp).
Looks first where this interpreter imports from (pip's isolated build environment when the
build requirements carry them, or the target with --no-build-isolation), then in the environment
pip installs into (sysconfig's site-packages, which an isolated build does not import from but
where `pip install "polyvit[sycl]"` run before put them). Prints "sycl_include;libsycl;
dpctl_include" and exits 0, or prints why not to stderr and exits 1.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import sysconfig
from pathlib import Path


def find(dist_name: str, suffix: str) -> Path | None:
    """The first installed file of dist_name whose RECORD path ends with suffix."""
    places = [sys.path, [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]]
    for path in places:
        for dist in md.Distribution.discover(name=dist_name, path=path):
            for f in dist.files or []:
                if f.as_posix().endswith(suffix):
                    located = Path(dist.locate_file(f)).resolve()
                    if located.exists():
                        return located
    return None


def main() -> int:
    sycl_hpp = find("intel-sycl-rt", "include/sycl/sycl.hpp")
    libsycl = find("intel-sycl-rt", "/libsycl.so")
    dpctl_hpp = find("dpctl", "dpctl/include/dpctl4pybind11.hpp")
    missing = [name for name, path in (("intel-sycl-rt headers", sycl_hpp),
                                       ("intel-sycl-rt libsycl.so", libsycl),
                                       ("dpctl dpctl4pybind11.hpp", dpctl_hpp)) if path is None]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{sycl_hpp.parent.parent};{libsycl};{dpctl_hpp.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
