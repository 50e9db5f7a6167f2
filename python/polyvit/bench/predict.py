"""End-to-end dataset inference: a folder of JPEGs on disk to rows in parquet.

    .venv/bin/python benchmarks/bench_predict.py [--images 2000] [--runs peer cpp-fp32 ...]
        [--folder /tmp/polyvit-photos] [--update-docs docs/results.md README.md] [--json out.json]
    .venv/bin/vit-bench ... --predict 2000     # the same table as a section of vit-bench's run

Generates (once, then reuses) a folder of photo-sized JPEGs (500x375 to 1024x768, quality 90,
smooth content with grain, as photos have) and runs each job in its own process, one after the
other, on the same folder:

- peer: plain torch eager ViT-S/32 (polyvit.bench.torch_peer, the timm layout) fed by a
  torch DataLoader(num_workers=2) whose dataset decodes with PIL and applies the timm eval
  transform (as timm's inference.py does), rows written to parquet with pyarrow; run with
  OMP_WAIT_POLICY=passive, which vit-predict sets for its own model and which speeds the peer
  up as well;
- vit-predict on the local engine, cpp fp32 / bf16 / int8;
- vit-predict --engine ray, cpp int8, one actor: the first job on a new local cluster, and a
  job on a running one (the cluster, and Ray Data's helper actors that its first job starts,
  made by a job over 64 of the images first, as on a cluster that serves jobs one after the
  other).

Reported per job: images/s over the job (first read to the parquet file written; process
start, imports and model loading excluded for every job alike), the ratio to the peer, the
share of the job the model waited for input (local engine), and the high-water mark of the
summed RSS of the job's process tree (DataLoader workers and Ray's processes included),
sampled every 200 ms. Both models use the same seeded weights and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

RUNS = ("peer", "cpp-fp32", "cpp-bf16", "cpp-int8", "ray-cpp-int8", "ray-running-cpp-int8")
WARM_UP_IMAGES = 64
SIZES = ((500, 375), (640, 480), (800, 600), (1024, 768), (375, 500), (768, 1024))


# ---- the folder ----------------------------------------------------------------------------------

def make_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """count photo-like JPEGs; reused when the folder already holds them."""
    from PIL import Image

    marker = folder / f".complete-{count}-{seed}"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC),
                            dtype=np.int16)
        grain = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    marker.touch()
    return folder


# ---- one job per process ---------------------------------------------------------------------------

def run_peer(folder: Path, out: Path, threads: int, batch: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from polyvit.bench.torch_peer import vit
    from polyvit.config import get_config
    from polyvit.labels import class_names
    from polyvit.preprocessing import preprocess
    from polyvit.weights import random_weights

    cfg = get_config("vit_small_patch32_224")
    torch.set_num_threads(threads)
    model = vit(cfg, random_weights(cfg, seed=0)).eval()
    paths = sorted(str(p) for p in folder.glob("*.jpg"))

    class Photos(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):  # PIL decode + timm's eval transform, full-size decode
            return torch.from_numpy(preprocess(paths[i], cfg))

    loader = torch.utils.data.DataLoader(Photos(), batch_size=batch, num_workers=2)
    names = class_names(cfg.num_classes)
    start = time.perf_counter()
    indices, probs = [], []
    with torch.inference_mode():
        for x in loader:
            p = torch.softmax(model(x).double(), dim=-1)
            top = torch.topk(p, 5)
            indices += top.indices.tolist()
            probs += top.values.tolist()
    pq.write_table(pa.table({"path": paths, "topk_indices": indices,
                             "topk_labels": [[names[j] for j in row] for row in indices],
                             "topk_probs": probs, "error": [""] * len(paths)}), out)
    seconds = time.perf_counter() - start
    return {"rows": len(paths), "seconds": seconds, "images_per_second": len(paths) / seconds,
            "waiting_share": None}


def run_polyvit(folder: Path, out: Path, threads: int, batch: int, precision: str,
                engine: str, warm_up: bool = False) -> dict:
    from polyvit.cli import predict as predict_cli

    def job(inputs: str, out: Path) -> dict:
        summary = out.with_suffix(".json")
        argv = [inputs, "--out", str(out), "--overwrite", "--backend", "cpp", "--precision",
                precision, "--threads", str(threads), "--batch-size", str(batch), "--quiet",
                "--engine", engine, "--summary-json", str(summary)]
        if predict_cli.main(argv) != 0:
            raise SystemExit(f"vit-predict failed: {' '.join(argv)}")
        return json.loads(summary.read_text())

    if warm_up:  # the cluster stays up in this process between the two jobs
        listing = out.with_name("warm-up.txt")
        listing.write_text("\n".join(sorted(str(p) for p in folder.glob("*.jpg"))[:WARM_UP_IMAGES]))
        job(str(listing), out.with_name("warm-up.parquet"))
    return job(str(folder), out)


def child(args: argparse.Namespace) -> None:
    out = Path(args.scratch) / f"{args.child}.parquet"
    if args.child == "peer":
        result = run_peer(Path(args.folder), out, args.threads, args.batch)
    else:
        engine, precision = ("ray", "int8") if args.child.startswith("ray") else \
            ("local", args.child.split("-")[1])
        result = run_polyvit(Path(args.folder), out, args.threads, args.batch, precision, engine,
                             warm_up=args.child.startswith("ray-running"))
    print("RESULT " + json.dumps(result), flush=True)


# ---- the parent: run each job, watch its memory --------------------------------------------------

def process_tree(pid: int) -> dict[int, tuple[str, int, float]]:
    """{pid: (name, resident bytes, CPU seconds so far)} for pid and every process below it:
    one pass over /proc."""
    parent, info = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
            fields = tail.split()
            with open(f"/proc/{name}/statm") as f:
                rss = int(f.read().split()[1]) * page
            comm = head.split("(", 1)[1]
            # fields[0] is the state (stat's field 3): utime, stime are fields 14, 15
            info[int(name)] = (comm, rss, (int(fields[11]) + int(fields[12])) / tick)
            parent[int(name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for child, ppid in parent.items():
        children.setdefault(ppid, []).append(child)
    tree, stack = {}, [pid]
    while stack:
        p = stack.pop()
        if p in info:
            tree[p] = info[p]
        stack += children.get(p, [])
    return tree


def measure(run: str, args: argparse.Namespace, scratch: str) -> dict:
    cmd = [sys.executable, "-m", "polyvit.bench.predict", "--child", run, "--folder",
           str(args.folder), "--scratch", scratch, "--threads", str(args.threads), "--batch",
           str(args.batch)]
    env = dict(os.environ)
    if run == "peer":
        # vit-predict sets this for its model (it shares the cores with the decoders); torch's
        # OpenMP threads gain from it as much (47 -> 52 img/s measured), so the peer gets it too
        env.setdefault("OMP_WAIT_POLICY", "passive")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    peak = [0]
    cpu: dict[int, tuple[str, float]] = {}  # the last CPU seconds seen of each process

    def watch() -> None:
        while proc.poll() is None:
            tree = process_tree(proc.pid)
            peak[0] = max(peak[0], sum(rss for _, rss, _ in tree.values()))
            cpu.update({p: (name, seconds) for p, (name, _, seconds) in tree.items()})
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    watcher.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    watcher.join()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{run} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    by_name: dict[str, float] = {}
    for name, seconds in cpu.values():
        by_name[name] = by_name.get(name, 0.0) + seconds
    result.update(run=run, process_seconds=wall, peak_rss_mib=peak[0] / 2**20,
                  cpu_seconds=sum(by_name.values()),
                  cpu_by_process=dict(sorted(by_name.items(), key=lambda kv: -kv[1])))
    return result


def _pairs(results: list[dict], first: str, second: str) -> list[tuple[dict, dict]]:
    by_pass: dict[int, dict[str, dict]] = {}
    for r in results:
        by_pass.setdefault(r.get("pass", 0), {})[r["run"]] = r
    return [(runs[first], runs[second]) for _, runs in sorted(by_pass.items())
            if first in runs and second in runs]


def table(all_results: list[dict], images: int, threads: int) -> str:
    """The first pass's rows; the Ray notes over every pass."""
    results = [r for r in all_results if r.get("pass", 0) == 0]
    peer = next((r for r in results if r["run"] == "peer"), None)
    local = next((r for r in results if r["run"] == "cpp-int8"), None)
    lines = [f"{images} JPEGs (500x375 to 1024x768, q90) from disk to rows in parquet, ViT-S/32, "
             f"{threads} model threads, 2 decode workers, batch 32:", "",
             "| job | img/s | vs peer | model waiting | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|"]
    names = {"peer": "peer: torch eager + DataLoader(num_workers=2)",
             "cpp-fp32": "vit-predict cpp fp32", "cpp-bf16": "vit-predict cpp bf16",
             "cpp-int8": "vit-predict cpp int8",
             "ray-cpp-int8": "vit-predict --engine ray cpp int8, first job on a new cluster",
             "ray-running-cpp-int8": "vit-predict --engine ray cpp int8, on a running cluster"}
    for r in results:
        ratio = f"{r['images_per_second'] / peer['images_per_second']:.2f}x" if peer else "—"
        wait = "—" if r.get("waiting_share") is None else f"{100 * r['waiting_share']:.1f}%"
        lines.append(f"| {names[r['run']]} | {r['images_per_second']:.1f} | {ratio} | {wait} | "
                     f"{r['peak_rss_mib']:.0f} |")
    notes = []
    for run, what in (("ray-cpp-int8", "the first job on a new cluster (its start excluded)"),
                      ("ray-running-cpp-int8", "a job on a running cluster")):
        # one ratio per pass: a Ray run against the local run just before it
        slower = [100 * (lo["images_per_second"] / ray["images_per_second"] - 1)
                  for lo, ray in _pairs(all_results, "cpp-int8", run)]
        if slower:
            spread = (f" (median of {len(slower)} paired runs: "
                      f"{', '.join(f'{v:.0f}%' for v in slower)})" if len(slower) > 1 else "")
            notes.append(f"- Ray Data on one machine, {what}: {float(np.median(slower)):.0f}% "
                         f"slower than the local engine{spread}, same backend and precision.")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "polyvit-photos"))
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--passes", type=int, default=1,
                   help="run the local cpp int8 and the Ray jobs this many times in turn; the "
                        "Ray overhead is the median of the paired ratios (default 1)")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--update-docs", nargs="*", default=[],
                   help="files whose <!-- vit-bench:predict --> markers get the table")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--scratch", help=argparse.SUPPRESS)
    return p


def run_section(runs: list[str], images: int, threads: int, batch: int = 32,
                folder: str | None = None, passes: int = 1) -> tuple[str, list[dict]]:
    """Generate (or reuse) the folder, run each job in its own process: (table, results).
    passes > 1 runs the local cpp int8 job and the Ray jobs again, in turn, that many times in
    all: the Ray overhead is then the median of the paired ratios (a shared machine's speed
    drifts by tens of percent within minutes)."""
    args = build_parser().parse_args([])
    args.runs, args.images, args.threads, args.batch = runs, images, threads, batch
    base = Path(folder or args.folder) / str(images)
    print(f"folder {base}: generating {images} JPEGs if needed ...", file=sys.stderr)
    args.folder = make_folder(base, images)
    again = [r for r in runs if r == "cpp-int8" or r.startswith("ray-")]
    schedule = [(0, r) for r in runs] + \
        ([(k, r) for k in range(1, passes) for r in again] if len(again) > 1 else [])
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for k, run in schedule:
            print(f"running {run}{f' (pass {k + 1})' if k else ''} ...", file=sys.stderr)
            results.append({**measure(run, args, scratch), "pass": k})
            r = results[-1]
            top = ", ".join(f"{n} {t:.1f}" for n, t in list(r["cpu_by_process"].items())[:6])
            print(f"  {r['images_per_second']:.1f} img/s, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"CPU {r['cpu_seconds']:.1f} s over the process ({top})", file=sys.stderr)
    return table(results, images, threads), results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        child(args)
        return 0
    text, results = run_section(args.runs, args.images, args.threads, args.batch, args.folder,
                                args.passes)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.update_docs:
        from polyvit.cli.bench import update_docs

        for path in args.update_docs:
            update_docs(Path(path), "predict", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
