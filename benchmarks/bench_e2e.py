"""End-to-end benchmark: the C++ backend against torch eager, ONNX Runtime and OpenVINO on the
same weights, in the same process, in interleaved rounds, at batch 1 and 32.

    flock /tmp/polyvit-cpu.lock python benchmarks/bench_e2e.py [--config vit_small_patch32_224]
        [--batch 1 32] [--threads 2] [--rounds 7] [--precision fp32 bf16 int8]

Peers are optional imports (pip install onnxruntime openvino onnxscript); a missing one is
skipped with its reason. The torch reference (polyvit.reference) is exported once to ONNX and
that file feeds both ONNX Runtime and OpenVINO. OpenVINO runs twice: with
INFERENCE_PRECISION_HINT=f32 (the fp32 peer) and bf16 (its default on CPUs with AVX512_BF16,
the bf16 peer). Each round runs every runtime in turn: a warm-up call, then timed calls,
then a pause so thread pools that spin after a call (ONNX Runtime, OpenMP) are idle before
the next runtime starts. Printed: median ms per image and images/s over the rounds, the
spread (min-max of the rounds, in % of the median), and speed-ups against the peers: the
median over rounds of the per-round ratio (a round's runtimes ran within seconds of each
other, so drifts of this shared machine cancel), with the ratio of medians beside it. "load"
is the CPU time other processes took during the measurement, in cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date
from typing import Callable

import numpy as np


# ---- runtimes -----------------------------------------------------------------------------------

def torch_module(cfg, weights):
    import torch

    from polyvit import reference

    class Reference(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.names = list(weights)
            for i, name in enumerate(self.names):
                self.register_buffer(f"w{i}", torch.from_numpy(np.asarray(weights[name])))

        def forward(self, images):
            w = {name: getattr(self, f"w{i}") for i, name in enumerate(self.names)}
            return reference.forward(cfg, w, images)

    return Reference().eval()


def export_onnx(cfg, weights, folder: str) -> str:
    import torch

    path = os.path.join(folder, f"{cfg.name}.onnx")
    x = torch.zeros(2, cfg.in_chans, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        torch.onnx.export(torch_module(cfg, weights), (x,), path, dynamo=True,
                          input_names=["images"], output_names=["logits"],
                          dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    return path


def runtimes(cfg, weights, precisions, threads, folder):
    """{label: (precision, fn(images) -> logits)} for every runtime that loads here."""
    import polyvit

    found: dict[str, tuple[str, Callable]] = {}
    skipped: dict[str, str] = {}
    for precision in precisions:
        try:
            model = polyvit.load(weights, backend="cpp", config=cfg, precision=precision,
                                 threads=threads)
            found[f"cpp {precision}"] = (precision, model)
        except polyvit.BackendError as exc:
            skipped[f"cpp {precision}"] = str(exc)
    try:
        import torch

        torch.set_num_threads(threads)
        module = torch_module(cfg, weights)

        def run_torch(x, module=module):
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()
        found["torch eager fp32"] = ("fp32", run_torch)
        onnx_path = export_onnx(cfg, weights, folder)
    except Exception as exc:  # no torch or no onnxscript: no ONNX file for the others
        skipped["torch / ONNX export"] = f"{type(exc).__name__}: {exc}"
        onnx_path = None
    if onnx_path:
        try:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
            found[f"onnxruntime {ort.__version__} fp32"] = (
                "fp32", lambda x, s=sess: s.run(None, {"images": x})[0])
        except ImportError as exc:
            skipped["onnxruntime"] = str(exc)
        try:
            import openvino as ov

            core = ov.Core()
            for hint in ("f32", "bf16"):
                if hint == "bf16" and "bf16" not in precisions:
                    continue
                compiled = core.compile_model(onnx_path, "CPU", {
                    "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
                request = compiled.create_infer_request()

                def run_ov(x, r=request):
                    return r.infer({0: x})[0]
                label = "fp32" if hint == "f32" else "bf16"
                found[f"openvino {ov.__version__.split('-')[0]} {label}"] = (label, run_ov)
        except ImportError as exc:
            skipped["openvino"] = str(exc)
    return found, skipped


# ---- timing -------------------------------------------------------------------------------------

def busy_seconds() -> float:
    """CPU seconds spent by every process so far (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def wait_until_idle(limit: float = 60.0) -> None:
    """Wait (up to limit seconds) until other processes use under 0.1 core for a second:
    the ONNX export can leave compile workers busy for a while."""
    end = time.perf_counter() + limit
    while time.perf_counter() < end:
        busy, own = busy_seconds(), sum(os.times()[:2])
        time.sleep(1.0)
        if (busy_seconds() - busy) - (sum(os.times()[:2]) - own) < 0.1:
            return


def measure(found, images, rounds: int, calls: int, pause: float):
    """({label: [seconds per image, one per round]}, cores used by other processes), the
    runtimes interleaved within each round."""
    batch = images.shape[0]
    times: dict[str, list[float]] = {label: [] for label in found}
    start_wall, start_busy, start_own = time.perf_counter(), busy_seconds(), sum(os.times()[:2])
    for _ in range(rounds):
        for label, (_, fn) in found.items():
            fn(images)  # warm-up: caches, thread pools, lazily built plans
            start = time.perf_counter()
            for _ in range(calls):
                fn(images)
            times[label].append((time.perf_counter() - start) / calls / batch)
            time.sleep(pause)
    others = (busy_seconds() - start_busy) - (sum(os.times()[:2]) - start_own)
    return times, max(0.0, others / (time.perf_counter() - start_wall))


def main() -> None:
    from polyvit import parity
    from polyvit.config import get_config
    from polyvit.weights import random_weights

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="vit_small_patch32_224")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16", "int8"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--seconds", type=float, default=0.4, help="timed seconds per runtime per round")
    p.add_argument("--pause", type=float, default=0.1, help="idle seconds between runtimes")
    args = p.parse_args()

    cfg = get_config(args.config)
    weights = random_weights(cfg, seed=0)
    print(f"{cfg.name}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {date.today()}, median of {args.rounds} interleaved rounds")
    with tempfile.TemporaryDirectory() as folder:
        found, skipped = runtimes(cfg, weights, args.precision, args.threads, folder)
        for label, why in skipped.items():
            print(f"skipped {label}: {why}")
        wait_until_idle()
        for batch in args.batch:
            images = parity.random_images(cfg, batch, seed=1)
            # every runtime must compute the same logits before its time means anything
            ref = found["cpp fp32"][1](images) if "cpp fp32" in found else None
            for label, (precision, fn) in found.items():
                if ref is not None and precision == "fp32":
                    err = float(np.max(np.abs(fn(images) - ref)))
                    assert err < 1e-3 * max(1.0, float(np.max(np.abs(ref)))), (label, err)
            for _, fn in found.values():  # first calls build plans and fill caches
                fn(images)
            one = time.perf_counter()
            for _, fn in found.values():
                fn(images)
            calls = max(1, round(args.seconds / (time.perf_counter() - one) * len(found)))
            times, load = measure(found, images, args.rounds, calls, args.pause)
            med = {label: float(np.median(t)) for label, t in times.items()}
            print(f"\nbatch {batch} ({calls} calls per runtime per round, load {load:.2f})")
            print(f"{'runtime':28} {'ms/img':>8} {'img/s':>8} {'spread':>8}")
            for label, t in times.items():
                spread = (max(t) - min(t)) / med[label]
                print(f"{label:28} {1e3 * med[label]:8.2f} {1 / med[label]:8.1f} {spread:8.1%}")
            print_ratios(times)


def print_ratios(times: dict[str, list[float]]) -> None:
    """Each cpp precision's speed-up (peer time / ours) against every peer and our fp32:
    median of per-round ratios (ratio of the medians in brackets)."""
    ours = [k for k in times if k.startswith("cpp ")]
    for label in ours:
        others = [k for k in times if not k.startswith("cpp ")]
        if label != "cpp fp32" and "cpp fp32" in times:
            others.append("cpp fp32")
        t = np.asarray(times[label])
        parts = [f"{o}: {np.median(np.asarray(times[o]) / t):.2f}x "
                 f"({np.median(times[o]) / np.median(t):.2f}x)" for o in others]
        print(f"speed-up of {label} over " + ", ".join(parts))


if __name__ == "__main__":
    main()
