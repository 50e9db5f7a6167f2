"""vit-eval: top-1, top-5, loss and per-class accuracy of any weights on a labelled dataset.

    vit-eval weights/vit_digits.safetensors --data digits --split test
    vit-eval weights/vit_digits.safetensors --data digits --backend cpp --precision int8 --json
    vit-eval vit_s32.safetensors --data ~/data/imagenet --split val --five-crop --out eval.json
    vit-eval vit_s32.safetensors --data ~/data/imagenet --split val --engine ray --ray-actors 4
"""

from __future__ import annotations

import argparse
import json
import sys

from .common import (add_engine_arguments, add_model_arguments, backend_options, positive_int,
                     run_main)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vit-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="docs/training.md lists the datasets and the metrics.")
    p.add_argument("weights", help="checkpoint in any supported layout")
    p.add_argument("--data", required=True,
                   help="'digits', or a dataset folder (docs/datasets.md)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="the split to score (default test)")
    p.add_argument("--backend", default="torch", help="backend name (default torch)")
    p.add_argument("--precision", default="fp32", help="fp32 (default), or one the backend offers")
    p.add_argument("--five-crop", action="store_true",
                   help="average the softmax over five crops (the seed checkpoint's evaluation)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward call")
    p.add_argument("--threads", type=positive_int, help="threads for the backend")
    p.add_argument("--device", help="the sycl backend's filter string or the cuda device index")
    p.add_argument("--workers", type=positive_int, default=4, help="image decoding threads")
    add_engine_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--out", metavar="FILE.json", help="also write the JSON report to this file")
    add_model_arguments(p, weights_option=False)
    return p


def _main(argv: list[str] | None) -> int:
    import polyvit

    from ..datasets import open_dataset
    from ..evaluation import evaluate, evaluate_ray
    from ..files import atomic_path
    from ..inference.output import check_writable

    from ..backends._native import sleep_at_barriers

    args = build_parser().parse_args(argv)
    if args.engine == "local":
        sleep_at_barriers()  # the model shares the cores with the decoders (before it loads)
    if args.config:
        raise ValueError("--config chooses the built-in weights' model; a checkpoint carries "
                         "its own")
    if args.out:
        check_writable(args.out)
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    options = backend_options(args.backend, args.threads, device)
    data = open_dataset(args.data, args.split)
    crops = "five" if args.five_crop else "center"
    progress = not args.json and sys.stderr.isatty()
    if args.engine == "ray":
        from ..inference.ray_engine import connect

        connect(args.ray_address)  # an unreachable cluster fails here, in seconds
        report = evaluate_ray(args.weights, data, backend=args.backend,
                              precision=args.precision, options=options, crops=crops,
                              batch_size=args.batch_size, actors=args.ray_actors,
                              address=args.ray_address, num_heads=args.num_heads,
                              image_size=args.image_size, progress=progress)
        config_name = report["config"]  # the driver read the checkpoint once, in evaluate_ray
    else:
        model = polyvit.load(args.weights, backend=args.backend, precision=args.precision,
                             num_heads=args.num_heads, image_size=args.image_size, **options)
        report = evaluate(model, data, crops=crops, batch_size=args.batch_size,
                          workers=args.workers, progress=progress)
        config_name = model.config.name
    report = {"weights": args.weights, "data": args.data, "split": args.split,
              "config": config_name, **report}
    text = json.dumps(report, indent=2)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
    if args.json:
        print(text)
        return 0
    skipped = f", {report['skipped']} skipped" if report["skipped"] else ""
    print(f"{data.describe()}: top-1 {100 * report['top1']:.2f}%  top-5 "
          f"{100 * report['top5']:.2f}%  loss {report['loss']:.4f}  ({report['n']} images"
          f"{skipped})")
    engine = f", Ray Data with {args.ray_actors} actor(s)" if args.engine == "ray" else ""
    print(f"{report['backend']} {report['precision']}{engine}, {report['crops']} crop"
          f"{'s' if args.five_crop else ''}: {report['img_per_s']:.0f} img/s, "
          f"{report['model_ms_per_img']:.3f} ms per image in the model")
    print("per-class top-1:")
    width = max(len(n) for n in report["per_class"])
    for name, acc in report["per_class"].items():
        print(f"  {name:<{width}}  " + ("   n/a" if acc is None else f"{100 * acc:6.2f}%"))
    for line in report["skipped_items"]:
        print(f"skipped {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-eval", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
