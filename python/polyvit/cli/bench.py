"""vit-bench: every available backend x precision x batch size against the peers, in one run."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

from .. import backends
from ..backends._native import default_threads
from ..bench import report
from ..bench.peers import peer_runners
from ..bench.sweep import inputs, measure, polyvit_runners
from ..config import PRESETS
from ..errors import BackendError
from ..model import resolve_weights
from .common import positive_int, run_main

FULL_BUDGET, QUICK_BUDGET = 60.0, 4.0   # seconds of timed rounds per batch size
CPU_BATCHES, GPU_BATCHES = [1, 32], [1, 32, 256, 1024]
GPU_BACKENDS = ("cuda", "triton")  # either selected: the GPU batch sizes
SPEED_PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # fp64 is the oracle, not a speed target


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-bench",
        description="Measure every available polyvit backend, precision and batch size against "
                    "torch eager, torch.compile, ONNX Runtime and OpenVINO on the same weights, "
                    "with each run's parity against the float64 reference.")
    p.add_argument("--backends", type=name_list, help="comma-separated (default: all available)")
    p.add_argument("--precisions", type=name_list,
                   help="comma-separated (default: fp32, bf16, fp16, int8 where offered)")
    p.add_argument("--batch-sizes", type=int_list,
                   help="comma-separated (default 1,32 on CPU; 1,32,256,1024 with a GPU backend)")
    p.add_argument("--rounds", type=positive_int,
                   help="timed rounds per batch size (default: as many as the time budget allows)")
    p.add_argument("--quick", action="store_true",
                   help="about a minute: a short time budget, no torch.compile")
    p.add_argument("--no-peers", action="store_true", help="measure polyvit backends only")
    p.add_argument("--weights", help="checkpoint to measure (default: built-in seeded weights)")
    p.add_argument("--config", choices=sorted(PRESETS),
                   help="preset for the built-in weights (default vit_small_patch32_224)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for every runner (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--predict", type=positive_int, metavar="IMAGES",
                   help="also the dataset section: vit-predict (cpp at the selected precisions, "
                        "local and Ray engines) against torch eager + DataLoader, end to end on "
                        "IMAGES generated photo-sized JPEGs (docs/results.md's table: 2000); "
                        "ViT-S/32 built-in weights, whatever --weights says")
    p.add_argument("--out", default="bench-out", help="folder for results.json/.md/.png")
    p.add_argument("--update-docs", metavar="PATH", action="append",
                   help="also write the results into this markdown file (repeatable): between "
                        "its <!-- vit-bench:cpu --> (or gpu) markers the whole report, between "
                        "<!-- vit-bench:cpu-matrix --> markers the feature matrix only")
    return p


def resolve_backends(requested: list[str] | None) -> tuple[list[str], dict]:
    statuses = backends.available_backends()
    for name, (ok, _) in statuses.items():
        timeable, why = backends.backend_class(name).timeable() if ok else (True, "")
        if not timeable:
            statuses[name] = (False, f"not timed: {why}")
    if requested is None:
        return [n for n, (ok, _) in statuses.items() if ok], statuses
    for name in requested:
        backends.backend_class(name)  # BackendError naming the known backends
        ok, reason = statuses[name]
        if not ok:
            raise BackendError(f"backend {name!r} is not available here: {reason}")
    return requested, statuses


def resolve_precisions(requested: list[str] | None, names: list[str]) -> list[str]:
    offered = {p for n in names for p in backends.backend_class(n).precisions}
    if requested is None:
        return [p for p in SPEED_PRECISIONS if p in offered]
    unknown = [p for p in requested if p not in offered]
    if unknown:
        raise BackendError(f"no selected backend offers precision {', '.join(unknown)}; "
                           f"they offer: {', '.join(sorted(offered))}")
    return requested


def update_docs(path: Path, section: str, markdown: str, matrix: str = "") -> None:
    """Write the report between the file's <!-- vit-bench:SECTION --> markers and the feature
    matrix between its <!-- vit-bench:SECTION-matrix --> markers (a README shows only the
    matrix); a file with neither gets the report appended."""
    text = path.read_text() if path.exists() else "# Results\n"
    found = False
    for name, content in ((section, markdown), (f"{section}-matrix", matrix)):
        begin, end = f"<!-- vit-bench:{name} -->", f"<!-- /vit-bench:{name} -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if content and pattern.search(text):
            block = f"{begin}\n{content.strip()}\n{end}"
            text, found = pattern.sub(lambda _: block, text), True
    if not found:
        text = (text.rstrip() + f"\n\n<!-- vit-bench:{section} -->\n{markdown.strip()}\n"
                f"<!-- /vit-bench:{section} -->\n")
    path.write_text(text)


def predict_runs(names: list[str], precisions: list[str], peers: bool) -> tuple[list[str], list[str]]:
    """The dataset section's jobs for this selection, and a note for each one left out."""
    import importlib.util

    from ..bench.predict import RUNS

    runs, notes = [], []
    if peers:
        if importlib.util.find_spec("torch") is None:
            notes.append("dataset section: no peer row (torch is not installed)")
        else:
            runs.append("peer")
    if "cpp" not in names:
        notes.append("dataset section: vit-predict runs the cpp backend, which is not selected")
        return runs, notes
    runs += [r for r in RUNS if r.startswith("cpp-") and r.split("-")[1] in precisions]
    if "int8" in precisions:
        if importlib.util.find_spec("ray") is None:
            notes.append("dataset section: no Ray rows (pip install 'polyvit[ray]')")
        else:
            runs += [r for r in RUNS if r.startswith("ray-")]
    return runs, notes


def _predict_section(args: argparse.Namespace, names: list[str], precisions: list[str],
                     threads: int, out: Path) -> None:
    import json

    from ..bench.predict import run_section

    runs, notes = predict_runs(names, precisions, not args.no_peers)
    for line in notes:
        print(f"vit-bench: {line}", file=sys.stderr)
    if not runs:
        return
    markdown, results = run_section(runs, args.predict, threads)
    (out / "predict.md").write_text(markdown)
    (out / "predict.json").write_text(json.dumps(results, indent=2))
    for path in args.update_docs or []:
        update_docs(Path(path), "predict", markdown)
    print(markdown)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    names, statuses = resolve_backends(args.backends)
    if not names:
        raise BackendError("no polyvit backend is available here; see polyvit.available_backends()")
    precisions = resolve_precisions(args.precisions, names)
    gpu = any(n in GPU_BACKENDS for n in names)
    batches = args.batch_sizes or (GPU_BATCHES if gpu else CPU_BATCHES)
    threads = args.threads or default_threads()
    if args.config and args.weights:
        raise ValueError("--config chooses the built-in weights' model; --weights carries its own")
    cfg, weights, source = resolve_weights(args.weights, args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    runners = polyvit_runners(names, precisions, cfg, weights, threads)
    notes: list[str] = []
    if not args.no_peers:
        peer, notes = peer_runners(precisions, cfg, weights, threads, include_costly=not args.quick,
                                   calibration=inputs(cfg, 32))
        runners += peer
    budget = QUICK_BUDGET if args.quick else FULL_BUDGET
    print(f"vit-bench: {len(runners)} runners x batch {','.join(map(str, batches))}, "
          f"{threads} threads, {cfg.name}; setting up (peers export to ONNX first) ...",
          file=sys.stderr)
    records = []
    with tqdm(total=0, desc="vit-bench", unit="call", file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        for batch in batches:
            bar.set_postfix_str(f"batch {batch}")
            records += measure(runners, cfg, weights, batch, budget, args.rounds, progress=bar)
    notes += [f"{r.label}: could not run ({r.error})" for r in runners if r.error]

    info = report.machine()
    settings = {"threads": threads, "batch_sizes": batches, "quick": args.quick,
                "config": cfg.name, "weights": source, "precisions": precisions,
                "command": "vit-bench " + " ".join(shlex.quote(a) for a in
                                                   (sys.argv[1:] if argv is None else argv))}
    report.write_json(out / "results.json", info, settings, records, statuses, notes)
    markdown = report.write_markdown(out / "results.md", info, settings, records, statuses, notes)
    chart = report.write_chart(out / "results.png", records, info)
    matrix = report.matrix_summary(info, records, statuses)
    for path in args.update_docs or []:
        update_docs(Path(path), "gpu" if gpu else "cpu", markdown, matrix)
    print(markdown)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}"
          f"{', ' + str(out / 'results.png') if chart else ' (no chart: matplotlib missing)'}",
          file=sys.stderr)
    if args.predict:
        _predict_section(args, names, precisions, threads, out)
    failures = report.parity_failures(records)
    for line in failures:
        print(f"vit-bench: error: {line}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-bench", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
