"""vit-convert SRC DST: any supported checkpoint layout -> the shared .safetensors format."""

from __future__ import annotations

import argparse
import sys

from ..convert import import_checkpoint
from ..weights import STORAGE_DTYPES, save
from .common import positive_int, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-convert",
        description="Convert a ViT checkpoint (timm .pth/.bin/.safetensors, JAX AugReg or "
                    "big_vision .npz, HF ViTForImageClassification folder, miguelmartin75/vit "
                    "checkpoint) into polyvit's shared .safetensors format.")
    p.add_argument("src", help="checkpoint file or model folder")
    p.add_argument("dst", help="output .safetensors path")
    p.add_argument("--num-heads", type=positive_int,
                   help="head count, for checkpoints that do not record it (default: width/64)")
    p.add_argument("--dtype", choices=list(STORAGE_DTYPES), default="fp32",
                   help="storage dtype of the output (default fp32)")
    return p


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cfg, tensors, layout = import_checkpoint(args.src, num_heads=args.num_heads)
    path = save(args.dst, cfg, tensors, dtype=args.dtype, source=f"{layout}:{args.src}")
    params = sum(t.size for t in tensors.values())
    print(f"wrote {path}: {cfg.name} from a {layout} checkpoint, {params:,} parameters, "
          f"{args.dtype}, {cfg.num_tokens} tokens, {cfg.num_heads} heads, gelu {cfg.gelu}, "
          f"ln_eps {cfg.ln_eps:g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-convert", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
