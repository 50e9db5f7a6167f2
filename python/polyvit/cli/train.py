"""vit-train: train or fine-tune a ViT on a labelled dataset; resume a stopped run.

    vit-train --data digits --out runs/digits
    vit-train --data ~/data/tiny-imagenet-200 --out runs/tiny model=vit_small_patch16_224 image_size=64
    vit-train --data digits --out runs/ft init=vit_s32.safetensors image_size=64 freeze_backbone=true
    vit-train --resume runs/digits [epochs=200]
    torchrun --nproc_per_node 2 -m polyvit.cli.train --data digits --out runs/ddp
"""

from __future__ import annotations

import argparse
import sys

from .common import run_main


def parser() -> argparse.ArgumentParser:
    from ..training.config import RESUMABLE_CHANGES, TrainConfig

    p = argparse.ArgumentParser(
        prog="vit-train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (key=value; defaults train a small ViT on digits):\n"
               + TrainConfig().describe()
               + f"\n\na resumed run may change only: {', '.join(RESUMABLE_CHANGES)}"
               + "\ndocs/training.md explains the recipe, the outputs and DDP.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--data", help="'digits', or a dataset folder (docs/datasets.md); "
                                  "the same as data=")
    p.add_argument("--out", help="output folder: model.safetensors, last.pt, metrics.csv, "
                                 "curves.png, results.json")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-train", _main, argv)


def _main(argv: list[str] | None) -> int:
    from ..errors import ConfigError
    from ..training.config import TrainConfig
    from ..training.trainer import train

    args = parser().parse_intermixed_args(argv)  # key=value may come before or after options
    overrides = list(args.overrides)
    if args.resume:
        if args.out and args.out != args.resume:
            raise ConfigError("--resume DIR continues the run in DIR; drop --out")
        if args.data:
            overrides.append(f"data={args.data}")
        train(TrainConfig(), args.resume, resume=True, overrides=overrides)
        return 0
    if not args.out:
        raise ConfigError("--out DIR is required (where the model, checkpoints and metrics go)")
    if args.data:
        overrides.insert(0, f"data={args.data}")
    cfg, named = TrainConfig().override(overrides)
    if cfg.init and "model" in named:
        raise ConfigError("init= fine-tunes the checkpoint's own architecture; drop model=")
    train(cfg, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
