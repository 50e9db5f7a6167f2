"""The digits model's test accuracy on every backend and precision this machine runs: the
README's table, written by this script.

    python benchmarks/eval_digits.py                                  # print the table
    python benchmarks/eval_digits.py --update-docs README.md --json eval_digits.json

Each row is vit-eval's evaluate() of weights/vit_digits.safetensors on the digits test split
(360 images, i % 5 == 0), single crop; the delta is against torch fp32 in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "vit_digits.safetensors"
BEGIN, END = "<!-- eval-digits -->", "<!-- /eval-digits -->"


def combinations() -> list[tuple[str, str, str]]:
    """(backend, precision, reason it does not run here or '') for every registered pair."""
    from polyvit import backends

    out = []
    for name in backends.names():
        cls = backends.backend_class(name)
        ok, reason = backends.available_backends()[name]
        for precision in cls.precisions:
            if precision == "fp64":
                continue
            why = reason if not ok else ("" if cls.supports(precision)[0]
                                         else cls.supports(precision)[1])
            out.append((name, precision, why))
    return out


def measure(weights: Path, split: str) -> list[dict]:
    import polyvit
    from polyvit import backends
    from polyvit.datasets import open_dataset
    from polyvit.evaluation import evaluate

    data = open_dataset("digits", split)
    rows = []
    for name, precision, why in combinations():
        row = {"backend": name, "precision": precision}
        if why:
            row["not_run"] = why
        else:
            model = polyvit.load(weights, backend=name, precision=precision)
            report = evaluate(model, data, batch_size=120)
            row.update({k: report[k] for k in ("top1", "top5", "loss", "n", "model_ms_per_img")})
            timed, why_not = backends.backend_class(name).timeable()
            if not timed:  # an interpreter ran the kernels: its time says nothing of them
                row["model_ms_per_img"], row["not_timed"] = None, why_not
        rows.append(row)
        print(f"{name} {precision}: " + (f"not run ({why})" if why else
                                         f"top-1 {100 * row['top1']:.2f}%"), file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    ref = next(r for r in rows if r["backend"] == "torch" and r["precision"] == "fp32")
    lines = ["| backend | precision | test top-1 | top-5 | loss | Δ top-1 vs torch fp32 | ms / image |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "not_run" in r:  # the reason's first clause: "no CUDA device", "... needs a GPU"
            lines.append(f"| {r['backend']} | {r['precision']} | not run here: "
                         f"{r['not_run'].split(':')[0]} | | | | |")
            continue
        delta = 100 * (r["top1"] - ref["top1"])
        ms = "interpreted" if r["model_ms_per_img"] is None else f"{r['model_ms_per_img']:.3f}"
        lines.append(f"| {r['backend']} | {r['precision']} | {100 * r['top1']:.2f}% | "
                     f"{100 * r['top5']:.2f}% | {r['loss']:.4f} | {delta:+.2f} | {ms} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--update-docs", metavar="PATH", type=Path, action="append",
                   help=f"replace the table between {BEGIN} and {END} in this file")
    p.add_argument("--json", metavar="FILE", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if not torch_cuda() and "TRITON_INTERPRET" not in os.environ:
        os.environ["TRITON_INTERPRET"] = "1"  # triton's kernels through its interpreter on a CPU
    rows = measure(args.weights, args.split)
    text = table(rows)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    for path in args.update_docs or []:
        doc = path.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to replace")
        path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))
    return 0


def torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
