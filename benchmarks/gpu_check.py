"""One prepared GPU check: build, test and measure the GPU backends in one go, within about 8
minutes on an H200, everything it learns written under one folder.

    bash benchmarks/gpu_check.sh [OUT]        # OUT: default $OUT, else gpu-check-out
    python3 benchmarks/gpu_check.py --out OUT [--only STEP ...] [--force-build]

Steps, in order, each with its own timeout (a hang costs that step, not the run):
  build          polyvit with the CUDA backend for sm_90 (pip install --no-build-isolation
                 --no-deps -e ., 16 jobs), skipped when nothing it compiles changed since the
                 last build on this machine (a stamp of the hashed sources under build/)
  cuda-tests     the CUDA parity, op-level and device tests, the backend required
  triton-tests   the triton op-level, parity and backend tests, the backend required, every
                 kernel on its first config (POLYVIT_TRITON_AUTOTUNE=0)
  memcheck       compute-sanitizer memcheck over a short parity subset
  racecheck      compute-sanitizer racecheck on the attention and layernorm kernels
  cuda-speed     benchmarks/cuda_vs_torch.py: cuda vs torch eager, torch.compile, autocast bf16,
                 batch 1 32 256 1024, fp32 and bf16, interleaved in one process
  cuda-kernels   benchmarks/cuda_kernels.py: where the cuda backend's time goes, per kernel
  triton-ops     benchmarks/triton_ops.py: per-op figures vs torch, fp32 and bf16
  triton-model   benchmarks/triton_model.py: the model vs HF / timm / torch, batch 1 to 1024
A step that needs a GPU reports "skipped: no GPU" where there is none; a tool the machine
refuses (compute-sanitizer on some machines) is recorded as refused and the run goes on.

Writes OUT/gpu_check.json (the machine: GPU, driver, versions; every step's status, seconds,
test counts and figures), OUT/gpu_check.log (every step's output) and each benchmark's own
files. Exit status: 0 when every parity test that ran passed, 1 when one failed, 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / "build" / "gpu_check" / "build.stamp"
# what the build compiles: a change here means a rebuild
BUILD_INPUTS = ("cuda", "cpp_cpu", "cmake", "CMakeLists.txt", "pyproject.toml")
PY = sys.executable


def step_list() -> dict[str, int]:
    """{step: timeout in seconds}: about 8 minutes in all on an H200 with a warm build."""
    return {"build": 240, "cuda-tests": 120, "triton-tests": 180, "memcheck": 120,
            "racecheck": 90, "cuda-speed": 180, "cuda-kernels": 60, "triton-ops": 150,
            "triton-model": 240}


def sources_hash() -> str:
    digest = hashlib.sha256()
    for top in BUILD_INPUTS:
        path = ROOT / top
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if "__pycache__" in f.parts or not f.exists():
                continue
            digest.update(str(f.relative_to(ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def gpu_present() -> tuple[bool, str]:
    """Whether an NVIDIA GPU is visible (nvidia-smi), and its description."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no nvidia-smi"
    done = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                           "--format=csv,noheader"], capture_output=True, text=True)
    line = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() \
        else ""
    return bool(line), line or (done.stderr.strip() or "nvidia-smi found no GPU")


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for module in ("torch", "triton", "numpy", "timm", "transformers"):
        try:
            out[module] = __import__(module).__version__
        except Exception as exc:  # not installed, or broken: say which
            out[module] = f"missing ({type(exc).__name__})"
    nvcc = shutil.which("nvcc")
    if nvcc:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
        found = re.search(r"release ([\d.]+)", text)
        out["nvcc"] = found.group(1) if found else text.strip()[-60:]
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip() or "unknown"
    except OSError:
        out["commit"] = "unknown"
    return out


def pytest_counts(text: str) -> dict:
    """{"passed": n, "failed": n, ...} from pytest's last summary line."""
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", text):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def build_needed(digest: str, force: bool, stamp: Path = STAMP) -> tuple[bool, str]:
    """(whether to build, why): a build is skipped only when the stamp of the last successful
    build matches the sources and that build's extension still imports."""
    if force:
        return True, "--force-build"
    if not stamp.exists():
        return True, "no earlier build on this machine"
    if stamp.read_text().strip() != digest:
        return True, "sources changed since the last build"
    if subprocess.run([PY, "-c", "import polyvit._cuda"], cwd=ROOT,
                      capture_output=True).returncode != 0:
        return True, "the last build's extension does not import"
    return False, "sources unchanged since the last build"


class Check:
    def __init__(self, out: Path, gpu: bool, force_build: bool) -> None:
        self.out, self.gpu, self.force_build = out, gpu, force_build
        self.log = open(out / "gpu_check.log", "a")
        self.results: dict[str, dict] = {}

    def run(self, name: str, argv: list[str], timeout: int, env: dict | None = None) -> dict:
        """Run one command with its timeout; its output goes to the log."""
        self.log.write(f"\n===== {name}: {' '.join(argv)}\n")
        self.log.flush()
        start = time.perf_counter()
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, **(env or {})})
            text, code = done.stdout + done.stderr, done.returncode
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            code, status = None, f"timed out after {timeout} s"
        except OSError as exc:
            text, code, status = str(exc), None, f"could not start: {exc}"
        self.log.write(text)
        self.log.flush()
        return {"status": status, "exit": code, "seconds": round(time.perf_counter() - start, 1),
                "tail": text[-1500:]}

    def step(self, name: str, timeout: int) -> None:
        # every step needs the GPU machine: the build too (its python3 and torch are the ones
        # the tests run with; a build elsewhere would install into the wrong interpreter)
        if not self.gpu:
            self.results[name] = {"status": "skipped: no GPU"}
            return
        self.results[name] = getattr(self, "step_" + name.replace("-", "_"))(timeout)

    # ---- the steps ----------------------------------------------------------------------------

    def step_build(self, timeout: int) -> dict:
        digest = sources_hash()
        needed, why = build_needed(digest, self.force_build)
        if not needed:
            return {"status": f"skipped: {why}", "seconds": 0}
        env = {"POLYVIT_CUDA": "ON", "POLYVIT_MOJO": "OFF", "POLYVIT_SYCL": "OFF",
               "POLYVIT_CPP": "ON", "CMAKE_BUILD_PARALLEL_LEVEL": "16",
               "CMAKE_ARGS": "-DCMAKE_CUDA_ARCHITECTURES=90"}
        result = self.run("build", [PY, "-m", "pip", "install", "--no-build-isolation",
                                    "--no-deps", "-e", "."], timeout, env)
        if result["exit"] == 0:
            STAMP.parent.mkdir(parents=True, exist_ok=True)
            STAMP.write_text(digest + "\n")
        return result

    def _pytest(self, name: str, args: list[str], timeout: int, env: dict) -> dict:
        result = self.run(name, [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          timeout, env)
        result["tests"] = pytest_counts(result["tail"])
        return result

    def step_cuda_tests(self, timeout: int) -> dict:
        return self._pytest("cuda-tests", ["tests/test_cuda_gpu.py", "tests/test_ops.py",
                                           "tests/test_parity.py", "-k", "cuda"], timeout,
                            {"POLYVIT_REQUIRE_BACKENDS": "torch,cuda"})

    def step_triton_tests(self, timeout: int) -> dict:
        return self._pytest("triton-tests", ["tests/test_ops.py", "tests/test_parity.py",
                                             "tests/test_triton_backend.py",
                                             "tests/test_backend_contract.py", "-k", "triton"],
                            timeout, {"POLYVIT_REQUIRE_BACKENDS": "torch,triton",
                                      "POLYVIT_TRITON_AUTOTUNE": "0"})

    def _sanitizer(self, name: str, tool: str, argv: list[str], timeout: int) -> dict:
        sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
        if not Path(sanitizer).exists():
            return {"status": "refused: compute-sanitizer not found"}
        result = self.run(name, [sanitizer, "--tool", tool, "--error-exitcode", "99",
                                 "--target-processes", "all", *argv], timeout)
        if result["exit"] not in (0, 99) and re.search(
                r"not supported|unable to|permission|Could not|cannot be used", result["tail"], re.I):
            result["status"] = "refused: " + result["tail"].strip().splitlines()[-1][:200]
        elif result["exit"] == 99:
            result["status"] = "errors found"
        return result

    def step_memcheck(self, timeout: int) -> dict:
        return self._sanitizer("memcheck", "memcheck", [
            PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_parity.py", "-k",
            "cuda and fp32 and (vit_test or vit_small_patch32_224) and not 384 and not seed"],
            timeout)

    def step_racecheck(self, timeout: int) -> dict:
        code = ("import numpy as np; from polyvit import backends\n"
                "ops = backends.backend_class('cuda').ops('fp32')\n"
                "r = np.random.default_rng(0)\n"
                "ops.attention(r.standard_normal((2, 50, 1152)).astype(np.float32), 6)\n"
                "ops.layernorm(r.standard_normal((100, 384)).astype(np.float32), "
                "np.ones(384, np.float32), np.zeros(384, np.float32), 1e-6)\n")
        return self._sanitizer("racecheck", "racecheck", [PY, "-c", code], timeout)

    def step_cuda_speed(self, timeout: int) -> dict:
        path = self.out / "cuda_vs_torch.json"
        result = self.run("cuda-speed", [PY, "benchmarks/cuda_vs_torch.py", "--rounds", "15",
                                         "--compile", "default", "--json", str(path)], timeout)
        return self._with_json(result, path)

    def step_cuda_kernels(self, timeout: int) -> dict:
        path = self.out / "cuda_kernels.json"
        result = self.run("cuda-kernels", [PY, "benchmarks/cuda_kernels.py", "--batches", "1",
                                           "256", "--json", str(path)], timeout)
        return self._with_json(result, path)

    def step_triton_ops(self, timeout: int) -> dict:
        figures = {}
        result = {"status": "ok", "seconds": 0.0}
        for dtype in ("fp32", "bf16"):
            folder = self.out / "triton_ops" / dtype
            one = self.run(f"triton-ops {dtype}", [PY, "benchmarks/triton_ops.py", "--dtype",
                                                   dtype, "--out", str(folder)], timeout // 2)
            result["seconds"] += one["seconds"]
            if one["status"] != "ok":
                result.update(status=f"{dtype}: {one['status']}", tail=one["tail"])
            figures[dtype] = self._with_json({}, folder / "ops.json").get("figures")
        result["figures"] = figures
        return result

    def step_triton_model(self, timeout: int) -> dict:
        path = self.out / "triton_model.json"
        result = self.run("triton-model", [PY, "benchmarks/triton_model.py", "--rounds", "10",
                                           "--json", str(path)], timeout)
        return self._with_json(result, path)

    @staticmethod
    def _with_json(result: dict, path: Path) -> dict:
        if path.exists():
            try:
                result["figures"] = json.loads(path.read_text())
            except ValueError as exc:
                result["figures"] = f"unreadable: {exc}"
        return result


def main(argv: list[str] | None = None) -> int:
    steps = step_list()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out",
                        help="folder for gpu_check.json, the log and the benchmarks' files "
                             "(default: $OUT, else gpu-check-out)")
    parser.add_argument("--only", nargs="+", choices=list(steps), metavar="STEP",
                        help=f"run only these steps, in the usual order ({', '.join(steps)})")
    parser.add_argument("--force-build", action="store_true",
                        help="rebuild even when nothing the build compiles changed")
    parser.add_argument("--no-gpu", action="store_true",
                        help="act as if there were no GPU (every step reports skipped)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu, description = (False, "--no-gpu given") if args.no_gpu else gpu_present()
    check = Check(out, gpu, args.force_build)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "gpu": description if gpu else None,
              "why_no_gpu": None if gpu else description, "versions": versions(),
              "steps": check.results}
    start = time.perf_counter()
    for name, timeout in steps.items():
        if args.only and name not in args.only:
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        check.step(name, timeout)
        print(f"gpu_check: {name}: {check.results[name]['status']}", file=sys.stderr, flush=True)
        report["seconds"] = round(time.perf_counter() - start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")  # after each
    # parity held when every test step that ran passed whole (a timeout or a failed build is
    # not a pass); None when none ran (no GPU)
    ran = {n: check.results[n] for n in ("cuda-tests", "triton-tests")
           if n in check.results and not check.results[n]["status"].startswith("skipped")}
    failed = [n for n, r in ran.items() if r["status"] != "ok"]
    report["parity_held"] = None if not ran else not failed
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    verdict = ("not tested (no test step ran)" if not ran else
               "held" if not failed else "FAILED in " + ", ".join(failed))
    print(f"gpu_check: wrote {out / 'gpu_check.json'}; parity {verdict}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
