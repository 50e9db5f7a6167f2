"""vit-bench's outputs: results.json (everything, machine-readable), results.md (the feature
matrix and every measurement), results.png (throughput per backend and precision); the
benchmark scripts print the same measurement table, with paired speed-ups."""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .. import __version__, backends
from .rounds import paired_ratio
from .sweep import Record

VERSIONED = ("numpy", "torch", "onnxruntime", "openvino", "dpctl", "mojo-compiler")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = [f for f in CPU_FLAGS if f in present]
                    break
    except OSError:
        pass
    versions = {}
    for package in VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    # why there is none stays in results.json's backends section
    status = backends.available_backends().get("cuda")
    gpu = "CUDA device" if status is not None and status[0] else None
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags, "gpu": gpu,
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "polyvit": __version__, "versions": versions,
            "date": datetime.date.today().isoformat()}


def best_peer(records: list[Record], precision: str, batch: int) -> Record | None:
    """The fastest peer at this batch size: same precision if one was measured, else any."""
    same = [r for r in records if r.kind == "peer" and r.batch == batch and r.precision == precision]
    pool = same or [r for r in records if r.kind == "peer" and r.batch == batch]
    return max(pool, key=lambda r: r.images_per_second, default=None)


def ratio(record: Record, records: list[Record]) -> tuple[float | None, str]:
    """(throughput / best peer's, description of that peer)."""
    peer = best_peer(records, record.precision, record.batch)
    if peer is None:
        return None, ""
    return record.images_per_second / peer.images_per_second, f"{peer.runner} {peer.precision}"


def write_json(path: Path, info: dict, settings: dict, records: list[Record],
               statuses: dict, notes: list[str]) -> None:
    rows = []
    for r in records:
        row = r.to_dict()
        value, peer = ratio(r, records) if r.kind == "polyvit" else (None, "")
        row["ratio_to_best_peer"], row["best_peer"] = value, peer
        rows.append(row)
    path.write_text(json.dumps({"machine": info, "settings": settings,
                                "backends": {n: {"available": ok, "reason": why}
                                             for n, (ok, why) in statuses.items()},
                                "results": rows, "notes": notes}, indent=2) + "\n")


def _fmt(value: float | None, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def feature_matrix(records: list[Record], statuses: dict) -> list[str]:
    """One row per registered backend: what it offers and its headline figures."""
    lines = ["| backend | status | precisions | int8 quantisation | fp32 parity: max\\|Δlogit\\| "
             "(bound) | batch 1 fp32 ms/img | batch 32 img/s (best precision) | vs best peer |",
             "|---|---|---|---|---|---|---|---|"]
    for name, (ok, reason) in statuses.items():
        cls = backends.backend_class(name)
        precisions = ", ".join(cls.precisions)
        int8 = "yes" if "int8" in cls.precisions else "no"
        if not ok:
            lines.append(f"| `{name}` | unavailable: {reason} | {precisions} | {int8} | — | — | — "
                         f"| — |")
            continue
        mine = [r for r in records if r.kind == "polyvit" and r.runner == name]
        fp32 = [r for r in mine if r.precision == "fp32"]
        worst = max(fp32, key=lambda r: r.max_abs_error / r.tolerance, default=None)
        parity = "not measured" if worst is None else \
            f"{worst.parity} {worst.max_abs_error:.2g} ({worst.tolerance:.2g})"
        b1 = next((r for r in fp32 if r.batch == 1), None)
        b32 = max((r for r in mine if r.batch == 32), key=lambda r: r.images_per_second,
                  default=None)
        vs = ""
        if b32 is not None:
            value, peer = ratio(b32, records)
            vs = f"{value:.2f}× {peer} (batch 32)" if value is not None else "no peer"
        lines.append(
            f"| `{name}` | available | {precisions} | {int8} | {parity} | "
            f"{_fmt(b1 and b1.ms_per_image, '.1f')} | "
            f"{_fmt(b32 and b32.images_per_second, '.1f')}"
            f"{f' ({b32.precision})' if b32 else ''} | {vs or '—'} |")
    return lines


def matrix_summary(info: dict, records: list[Record], statuses: dict) -> str:
    """The feature matrix with one line saying where and when it was measured (for a README)."""
    return "\n".join([f"Measured on {info['cpu']}, {info['cores']} cores, GPU: "
                       f"{info['gpu'] or 'none'}, {info['date']}:", "",
                       *feature_matrix(records, statuses)])


def measurements(records: list[Record]) -> list[str]:
    lines = ["| runner | precision | batch | ms/img (median) | IQR | img/s | max\\|Δlogit\\| | "
             "top-1 | parity | cosine min / clear top-1 | vs best peer |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r.batch, r.kind != "polyvit", r.runner, r.precision)):
        lo, hi = r.spread_ms
        value, peer = ratio(r, records) if r.kind == "polyvit" else (None, "")
        name = f"`{r.runner}`" if r.kind == "polyvit" else f"{r.runner} (peer)"
        lines.append(f"| {name} | {r.precision} | {r.batch} | {r.ms_per_image:.2f} | "
                     f"{lo:.2f}–{hi:.2f} | {r.images_per_second:.1f} | {r.max_abs_error:.2g} | "
                     f"{100 * r.top1_agreement:.0f}% | {r.parity} | {_agreement(r)} | "
                     f"{_fmt(value, '.2f')}{'×' if value is not None else ''} "
                     f"{f'({peer})' if peer else ''} |")
    return lines


def _agreement(r: Record) -> str:
    """A reduced precision's agreement with the reference: lowest cosine over the batch, and
    the share of clear top-1 leads it kept."""
    if r.cosine is None:
        return "—"
    return f"{r.cosine:.5f} / " + ("no clear lead" if r.clear_top1 is None
                                   else f"{100 * r.clear_top1:.0f}%")


def speedups(records: list[Record], ours: str) -> list[str]:
    """The speed-up of each record of runner `ours` over every other record of its batch: the
    median over rounds of (their time / ours) in the same round, which cancels the drift of a
    shared machine, with the ratio of medians in brackets."""
    lines = []
    for mine in (r for r in records if r.runner == ours):
        others = [r for r in records if r.batch == mine.batch and r is not mine]
        parts = [f"{o.label} {paired_ratio(o.seconds, mine.seconds):.2f}x "
                 f"({o.ms_per_image / mine.ms_per_image:.2f}x)" for o in others]
        lines.append(f"batch {mine.batch}, speed-up of {mine.label} over " + ", ".join(parts))
    return lines


def parity_failures(records: list[Record]) -> list[str]:
    """One error line per polyvit run whose fp32 logits fail the parity rule."""
    return [f"{r.runner} {r.precision} batch {r.batch} fails parity (max|d| "
            f"{r.max_abs_error:.3g} > {r.tolerance:.3g})"
            for r in records if r.kind == "polyvit" and r.parity == "fail"]


def write_markdown(path: Path, info: dict, settings: dict, records: list[Record],
                   statuses: dict, notes: list[str]) -> str:
    flags = ", ".join(info["cpu_flags"]) or "none of " + ", ".join(CPU_FLAGS)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    text = "\n".join([
        f"## {info['cpu']}, {info['cores']} cores — {info['date']}",
        "",
        f"Machine: {info['cpu']} ({flags}), {info['cores']} cores, GPU: {info['gpu'] or 'none'}; "
        f"{info['os']}, Python {info['python']}, polyvit {info['polyvit']}, {versions}.",
        f"Settings: {settings['threads']} threads, batch sizes "
        f"{', '.join(map(str, settings['batch_sizes']))}, "
        f"{'quick mode' if settings['quick'] else 'full mode'}, model {settings['config']} "
        f"({settings['weights']}). Produced by `{settings['command']}`.",
        "",
        "### Feature matrix",
        "",
        *feature_matrix(records, statuses),
        "",
        "### Every measurement",
        "",
        "Median of interleaved rounds (IQR: 25th–75th percentile); max|Δlogit| against the "
        "float64 reference on the same input; parity by the project's rule (fp32 runs only); "
        "cosine min / clear top-1: a reduced precision's agreement with that reference (lowest "
        "cosine over the batch, share of clear top-1 leads kept; parity.agreement); int8 peers "
        "are calibrated on the batch-32 inputs (OpenVINO: NNCF post-training quantization; ONNX "
        "Runtime: static QDQ); 'vs best peer': throughput ratio against the fastest peer at the "
        "same batch size and precision (any precision where none was measured at it).",
        "",
        *measurements(records),
        *(["", "Notes:", ""] + [f"- {n}" for n in notes] if notes else []),
        "",
    ])
    path.write_text(text)
    return text


def write_chart(path: Path, records: list[Record], info: dict) -> bool:
    """A bar chart of throughput at the largest batch size; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if not records:
        return False
    batch = max(r.batch for r in records)
    rows = sorted((r for r in records if r.batch == batch), key=lambda r: r.images_per_second)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    colours = ["#2a6fbb" if r.kind == "polyvit" else "#999999" for r in rows]
    ax.barh([f"{r.runner} {r.precision}" for r in rows], [r.images_per_second for r in rows],
            color=colours)
    for i, r in enumerate(rows):
        ax.text(r.images_per_second, i, f" {r.images_per_second:.0f}", va="center", fontsize=8)
    ax.set_xlabel(f"images per second, batch {batch} (blue: polyvit, grey: peers)")
    ax.set_title(f"ViT throughput — {info['cpu']}, {info['cores']} cores, {info['date']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
