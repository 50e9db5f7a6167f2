"""vit-predict: classify every image of folders, globs and lists into one table of rows."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from .. import backends
from ..backends._native import sleep_at_barriers
from ..errors import BackendError
from ..inference import api
from ..inference.inputs import expand_inputs
from ..inference.output import RowWriter, check_writable, done_counts, output_format
from ..inference.pipeline import WORKER_KINDS, Stats, default_workers
from .common import (add_engine_arguments, add_model_arguments, backend_options, positive_int,
                     run_main)


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-predict",
        description="Classify every image of the INPUTs (files, folders, globs, list files) and "
                    "write one row per input to FILE: path, top-k indices/labels/probabilities "
                    "and the error, if any. Broken images get their error in their row.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (recursive), globs, or .txt/.lst files listing "
                        "one path per line (# comments and blank lines skipped)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output file; the format follows the extension: .parquet, .csv, .jsonl")
    add_model_arguments(p)
    p.add_argument("--backend", default="auto",
                   help="backend name; auto (default) takes cpp when it is available, else torch")
    p.add_argument("--precision", default="fp32", help="fp32 (default), or one the backend offers")
    p.add_argument("--threads", type=positive_int, help="threads for the backend (per Ray actor "
                                                         "with --engine ray)")
    p.add_argument("--device", help="the device of the sycl or cuda backend")
    p.add_argument("--topk", type=positive_int, default=5, help="classes per row (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="images per forward call (default 32)")
    p.add_argument("--features", action="store_true",
                   help="add the pre-logits embedding (class token after the final norm) as a "
                        "`features` column")
    p.add_argument("--five-crop", action="store_true",
                   help="average the softmax over five crops (the seed checkpoint's evaluation)")
    p.add_argument("--no-draft", dest="draft", action="store_false",
                   help="decode JPEGs at full size (default: at a reduced scale when the image "
                        "is far larger than the model input)")
    p.add_argument("--workers", type=nonnegative_int, default=None,
                   help=f"decode workers (default: the cores, {default_workers()} here; 0 decodes "
                        "in the main thread)")
    p.add_argument("--worker-kind", choices=WORKER_KINDS, default="thread",
                   help="decode in threads (default: Pillow releases the GIL) or processes")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in FILE (and FILE.partial/ from a killed job) and "
                        "classify only the inputs they lack")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.add_argument("--chunk-rows", type=positive_int, default=256,
                   help="rows per chunk written while the job runs (default 256)")
    add_engine_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--summary-json", metavar="PATH",
                   help="also write the end-of-job summary (counts, seconds, img/s, the share "
                        "of time the model was busy and waiting) as JSON")
    return p


def _backend_name(name: str) -> str:
    if name != "auto":
        return name
    available = backends.available_backends()
    for candidate in ("cpp", "torch"):
        if available.get(candidate, (False, ""))[0]:
            return candidate
    raise BackendError("neither the cpp nor the torch backend is available; see "
                       "polyvit.available_backends() for why, or name one with --backend")


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.engine == "local" and args.workers != 0:
        sleep_at_barriers()  # the model shares the cores with the decoders (before it loads)
    if args.resume and args.overwrite:
        raise ValueError("--resume keeps FILE's rows and --overwrite replaces them: pass one")
    check_writable(args.out)  # before any work: a job must not end unable to write its rows
    output_format(args.out)
    skipped: list[str] = []
    paths = expand_inputs(args.inputs, skipped)
    for line in skipped:
        print(f"vit-predict: warning: {line}", file=sys.stderr)
    backend = _backend_name(args.backend)
    options = backend_options(backend, args.threads, args.device)
    crops = "five" if args.five_crop else "center"
    job = api.Job(weights=args.weights, backend=backend, precision=args.precision,
                  options=options, config=args.config, num_heads=args.num_heads,
                  topk=args.topk, batch_size=args.batch_size, features=args.features,
                  crops=crops, draft=args.draft, workers=args.workers,
                  worker_kind=args.worker_kind, image_size=args.image_size)
    job.check()  # the backend, precision, options and --topk, before reading any image
    if args.engine == "ray":
        from ..inference.ray_engine import connect

        connect(args.ray_address)  # an unreachable cluster fails here, before any output
    with RowWriter(args.out, features=args.features, resume=args.resume,
                   overwrite=args.overwrite, chunk_rows=args.chunk_rows) as writer:
        todo = paths
        if args.resume:
            todo = skip_done(paths, done_counts(args.out))
            if not args.quiet:
                print(f"vit-predict: resuming: {len(paths) - len(todo)} of {len(paths)} input(s) "
                      "already have their rows", file=sys.stderr)
        stats = Stats()
        if args.weights is None and not args.quiet:
            print("vit-predict: note: no --weights: polyvit's built-in untrained weights; the "
                  "predictions mean nothing", file=sys.stderr)
        if args.engine == "ray":
            stream = job.run_ray(todo, stats=stats, address=args.ray_address,
                                 actors=args.ray_actors)
        else:
            stream = job.run_local(todo, stats=stats)
        with _progress(len(todo), args.quiet) as bar:
            for rows in stream:
                writer.write(rows)
                bar.update(len(rows))
                bar.set_postfix_str(f"{stats.errors} error(s)", refresh=False)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump({"engine": args.engine, "backend": job.backend, "precision": job.precision,
                       **stats.as_dict()}, f, indent=2)
    if not args.quiet:
        print(f"vit-predict: {stats.summary()}", file=sys.stderr)
        print(f"vit-predict: wrote {args.out} ({job.backend} {job.precision}, {args.engine} "
              "engine)", file=sys.stderr)
    return 0


def skip_done(paths: list[str], done: Counter) -> list[str]:
    """The paths still without a row: each row already written covers one listing of its path."""
    done = Counter(done)
    todo = []
    for path in paths:
        if done[path] > 0:
            done[path] -= 1
        else:
            todo.append(path)
    return todo


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="vit-predict", unit="img", file=sys.stderr, smoothing=0.1,
                disable=quiet or None)


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-predict", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
