"""What a run leaves besides its weights: metrics.csv, TensorBoard events, Weights & Biases,
curves.png and results.json. Only the main process writes them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from ..files import atomic_path

COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "img_per_s",
           "elapsed_s")


def write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """The whole history each time (a resumed run rewrites it from its checkpoint, so no row is
    lost or repeated)."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomic(path, buf.getvalue())


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def plot_curves(path: Path, history: list[dict[str, Any]]) -> bool:
    """Loss (train and val) and val top-1 per epoch as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], label="train")
    a.plot(epochs, [r["val_loss"] for r in history], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(epochs, [100 * r["val_top1"] for r in history], label="val top-1")
    b.plot(epochs, [100 * r["val_top5"] for r in history], label="val top-5")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy (%)"), b.legend(), b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


class Loggers:
    """TensorBoard and W&B, each when asked for and installed; a no-op otherwise."""

    def __init__(self, out: Path, config: dict[str, Any], tensorboard: bool, wandb: bool,
                 project: str, resume: bool) -> None:
        self.tb = None
        self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("note: tensorboard is not installed (pip install tensorboard); "
                      "metrics go to metrics.csv only", file=sys.stderr)
            else:
                self.tb = SummaryWriter(str(out / "tensorboard"))
        if wandb:
            import wandb as wb  # checked by the trainer before any work

            self.wandb = wb.init(project=project, config=config, dir=str(out),
                                 resume="allow" if resume else None)

    def step(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def epoch(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"epoch/{k}", v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({f"epoch/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
