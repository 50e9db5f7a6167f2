"""vit-export: a checkpoint to ONNX, TorchScript or a torch.export program, checked first."""

from __future__ import annotations

import argparse
import sys

from ..export import FORMATS, export
from .common import add_model_arguments, positive_int, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-export",
        description="Export a checkpoint (any supported layout) for deployment. The export is "
                    "checked before it is written: its logits must pass polyvit's fp32 parity "
                    "rule against the float64 reference (and onnx.checker for ONNX).")
    p.add_argument("weights", nargs="?", help="checkpoint (default: built-in untrained seeded "
                                              "weights of --config)")
    p.add_argument("out", help="output file, e.g. vit_s32.onnx, vit_s32.pt, vit_s32.pt2")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="onnx, torchscript or exported-program (default: from the extension: "
                        ".onnx, .pt / .torchscript, .pt2)")
    p.add_argument("--opset", type=positive_int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size (onnx, exported-program); checked at batch 1 and 3")
    add_model_arguments(p, weights_option=False)
    return p


SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".torchscript": "torchscript",
            ".pt2": "exported-program"}


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    fmt = args.format
    if fmt is None:
        suffix = "." + args.out.rsplit(".", 1)[-1].lower() if "." in args.out else ""
        if suffix not in SUFFIXES:
            raise ValueError(f"{args.out}: cannot tell the format from the extension; name it "
                             ".onnx, .pt or .pt2, or pass --format")
        fmt = SUFFIXES[suffix]
    if args.config and args.weights:
        raise ValueError("--config chooses the built-in weights' model; a checkpoint carries "
                         "its own")
    report = export(args.weights, args.out, fmt, opset=args.opset,
                    dynamic_batch=args.dynamic_batch, config=args.config,
                    num_heads=args.num_heads, image_size=args.image_size)
    opset = f", opset {report.opset}" if report.opset else ""
    print(f"wrote {report.path} ({report.format}{opset}); checked at batch "
          f"{', '.join(map(str, report.batches))}: max |logit - float64 reference| "
          f"{report.max_abs_error:.3g} within the fp32 bound {report.tolerance:.3g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-export", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
