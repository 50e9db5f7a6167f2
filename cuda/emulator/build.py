"""Builds polyvit._cuda and the dev programs for the CPU emulator, from cuda/ as it is.

    python cuda/emulator/build.py build/emulator          # about a minute on 2 cores
    python cuda/emulator/run.py build/emulator -q tests/test_ops.py -k cuda
    EMU_SMS=1 build/emulator/dev/linear_tc 256 64 256 1

The kernel sources are compiled by g++ with cuda_emulation.h forced in, after mechanical
rewrites: kernel<<<...>>>(args) becomes a launcher call, the cp.async inline PTX becomes a
checked 16-byte copy, extern __shared__ arrays point at the emulator's buffer, every kernel
starts with emu::kernel_entry(its __launch_bounds__), and every static __shared__ array is
followed by emu::static_shared(it) (poisoned per block, counted against 48 KiB). The host code
(cuda/src) compiles unchanged and links runtime.cpp instead of cudart. broken_kernels.cu, the
emulator's self-test, is built too (OUT/broken_kernels). See docs/backends/cuda.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUDA = HERE.parent
ROOT = CUDA.parent
CUDA_INCLUDE = "/usr/local/cuda/include"
# A line of cuda/dev/Makefile saying which kernels/ objects a dev program links.
DEV_LINK = re.compile(r"^\$\(BUILD\)/(\w+): ((?:\$\(BUILD\)/kernels/\w+\.o ?)+)$", re.M)

LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^();]*?>)?)<<<(.+?)>>>\(")
CP_ASYNC_16 = re.compile(r"(void cp_async_16\(void\* smem, const void\* gmem, bool inside\) \{).*?\n\}", re.S)
CP_ASYNC_OTHER = re.compile(r"(void cp_async_(?:commit|wait)\(\) \{).*?\}")
EMULATED_CP_ASYNC = r"""\1
  if ((reinterpret_cast<uintptr_t>(smem) | reinterpret_cast<uintptr_t>(gmem)) % 16) {
    std::fprintf(stderr, "emulator: cp.async with a misaligned address\\n");
    std::abort();
  }
  if (inside) std::memcpy(smem, gmem, 16); else std::memset(smem, 0, 16);
}"""


KERNEL = re.compile(r"__global__\s+void\s+(__launch_bounds__\s*\()?")
SHARED = re.compile(r"\b__shared__\b")


def closing(source: str, start: int) -> int:
    """The index of the bracket closing the one at source[start]."""
    pairs = {"(": ")", "[": "]"}
    stack = []
    for i in range(start, len(source)):
        if source[i] in pairs:
            stack.append(pairs[source[i]])
        elif stack and source[i] == stack[-1]:
            stack.pop()
            if not stack:
                return i
    raise SystemExit(f"emulator: unbalanced brackets after {source[start:start + 60]!r}")


def add_kernel_entries(source: str) -> str:
    """Every kernel definition starts with emu::kernel_entry(its launch bounds, or 0)."""
    pieces, done = [], 0
    for match in KERNEL.finditer(source):
        bounds, at = "0", match.end()
        if match.group(1):
            end = closing(source, at - 1)
            bounds, at = source[at:end], end + 1
        params = source.index("(", at)
        body = re.match(r"\s*\{", source[closing(source, params) + 1:])
        if body is None:
            continue  # a declaration
        start = closing(source, params) + 1 + body.end()
        pieces += [source[done:start], f" ::emu::kernel_entry({bounds});"]
        done = start
    return "".join(pieces) + source[done:]


def shared_names(declarators: str) -> list[str]:
    """The names declared by `float a[4][5], b[8]` (what follows __shared__, without the ';')."""
    names, depth, part = [], 0, ""
    for c in declarators + ",":
        depth += c in "([" and 1 or c in ")]" and -1 or 0
        if c == "," and depth == 0:
            head = part
            level = 0
            for i, d in enumerate(part):  # the declarator ends at its first top-level '['
                if d == "[" and level == 0:
                    head = part[:i]
                    break
                level += d in "(" and 1 or d in ")" and -1 or 0
            names.append(re.findall(r"\w+", head)[-1])
            part = ""
        else:
            part += c
    return names


def register_static_shared(source: str) -> str:
    """Each static __shared__ declaration is followed by emu::static_shared() of its arrays."""
    pieces, done = [], 0
    for match in SHARED.finditer(source):
        line = source[source.rfind("\n", 0, match.start()) + 1:match.start()]
        if "//" in line or "extern" in line:
            continue
        end = source.index(";", match.end())
        calls = "".join(f" ::emu::static_shared(&{n}, sizeof {n});"
                        for n in shared_names(source[match.end():end]))
        pieces += [source[done:end + 1], calls]
        done = end + 1
    return "".join(pieces) + source[done:]


def rewrite(source: str) -> str:
    source = LAUNCH.sub(r"emu::launcher(\2)(\1, ", source)
    source = CP_ASYNC_16.sub(EMULATED_CP_ASYNC, source)
    source = CP_ASYNC_OTHER.sub(r"\1}", source)  # copies are synchronous: nothing to wait for
    source = source.replace("extern __shared__ float smem[];",
                            "float* smem = reinterpret_cast<float*>(emu::dynamic_smem);")
    source = register_static_shared(add_kernel_entries(source))
    # A kernel's address as the runtime's C API takes it (nvcc's C++ overload is device-only).
    source = re.sub(r"cudaFuncSetAttribute\((\w+<\w+>),", r"cudaFuncSetAttribute((const void*)&\1,", source)
    if "<<<" in source or "asm volatile" in source:
        raise SystemExit("emulator: a construct the rewrite does not know is left in the source")
    return source


def dev_links() -> dict[str, list[str]]:
    """{dev program: the kernels it links}, read from cuda/dev/Makefile: one list for both builds."""
    links = {program: re.findall(r"kernels/(\w+)\.o", objects)
             for program, objects in DEV_LINK.findall((CUDA / "dev" / "Makefile").read_text())}
    missing = {p.stem for p in (CUDA / "dev").glob("*.cu")} - set(links)
    if missing:
        raise SystemExit(f"emulator: cuda/dev/Makefile names no kernels for {sorted(missing)}")
    return links


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"emulator build failed: {' '.join(command)}\n{result.stderr[-4000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (the package goes to OUT/pkg)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    import pybind11

    out = args.out.resolve()
    sources, objects = out / "src", out / "obj"
    for folder in (sources, objects):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in (CUDA / "kernels").iterdir():
        text = path.read_text()
        (sources / path.name).write_text(rewrite(text) if path.suffix == ".cu" else text)
    for path in (CUDA / "dev").glob("*.cu"):
        (sources / f"dev_{path.name}").write_text(rewrite(path.read_text()))
    for path in (CUDA / "dev").glob("*.h"):
        shutil.copy(path, sources / path.name)
    (sources / "selftest_broken_kernels.cu").write_text(rewrite((HERE / "broken_kernels.cu").read_text()))

    emulated = ["g++", "-std=c++20", "-O2", "-fPIC", "-w", "-include", "cuda_emulation.h",
                f"-I{HERE}", f"-I{sources}", f"-I{CUDA_INCLUDE}"]
    host = ["g++", "-std=c++17", "-O2", "-fPIC", "-w", "-fvisibility=hidden",
            f"-I{sysconfig.get_paths()['include']}", f"-I{pybind11.get_include()}",
            f"-I{CUDA / 'kernels'}", f"-I{CUDA_INCLUDE}", '-DPOLYVIT_CUDA_ARCHITECTURES="80-real,90"']
    jobs = [emulated + ["-x", "c++", "-c", str(p), "-o", str(objects / f"{p.stem}.o")]
            for p in sources.glob("*.cu")]
    jobs.append(emulated + ["-c", str(HERE / "runtime.cpp"), "-o", str(objects / "runtime.o")])
    jobs += [host + ["-c", str(p), "-o", str(objects / f"src_{p.stem}.o")] for p in (CUDA / "src").glob("*.cpp")]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs))

    package = out / "pkg" / "polyvit"
    shutil.rmtree(package.parent, ignore_errors=True)
    shutil.copytree(ROOT / "python" / "polyvit", package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    kernels = [objects / f"{p.stem}.o" for p in (CUDA / "kernels").glob("*.cu")]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    run(["g++", "-shared", "-o", str(package / f"_cuda{suffix}"), *map(str, kernels),
         *map(str, objects.glob("src_*.o")), str(objects / "runtime.o")])
    (out / "dev").mkdir(exist_ok=True)
    for program, links in dev_links().items():
        run(["g++", "-o", str(out / "dev" / program), str(objects / f"dev_{program}.o"),
             *(str(objects / f"{k}.o") for k in links), str(objects / "runtime.o")])
    run(["g++", "-o", str(out / "broken_kernels"), str(objects / "selftest_broken_kernels.o"),
         str(objects / "runtime.o")])
    print(f"emulated polyvit._cuda in {package}, dev programs in {out / 'dev'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
