"""vit-run: classify images with a ViT on one backend, or compare every available backend."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__, backends, parity
from ..config import ViTConfig
from ..errors import BackendError, ImageError
from ..inference.inputs import InputError, walk_images
from ..inference.pipeline import probabilities
from ..labels import class_names, sample_image_path
from ..inference.output import check_writable
from ..model import Model, build, recorded_labels, resolve_weights
from ..preprocessing import preprocess
from .common import add_model_arguments, backend_options, positive_int, run_main

UNTRAINED_NOTE = (
    "note: these are polyvit's built-in untrained weights (seeded random), so the predictions "
    "below mean nothing. Run a real checkpoint with --weights PATH: a timm .pth/.safetensors "
    "(e.g. vit_small_patch32_224.augreg_in21k_ft_in1k), a JAX AugReg .npz, an HF "
    "ViTForImageClassification folder or a miguelmartin75/vit checkpoint; see weights/README.md.")


def _device(value: str) -> int | str:
    """A device index (cuda) as an int, anything else as a SYCL filter string (sycl)."""
    return int(value) if value.isdigit() else value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vit-run",
        description="Classify images with a Vision Transformer on one of polyvit's backends, "
                    "or run every available backend and compare them with the reference.")
    p.add_argument("images", nargs="*", help="image files or folders (default: a bundled sample "
                                             "image); vit-predict handles datasets")
    p.add_argument("--backend", default="torch",
                   help="backend name, or 'all' to compare every available backend (default torch)")
    add_model_arguments(p)
    p.add_argument("--precision", default="fp32", help="fp32 (default), or one the backend offers")
    p.add_argument("--topk", type=positive_int, default=5, help="classes to print per image")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward call")
    p.add_argument("--threads", type=positive_int, help="threads for the backend")
    p.add_argument("--device", type=_device,
                   help="the sycl backend's SYCL filter string, e.g. opencl:cpu (default) or "
                        "level_zero:gpu; the cuda backend's device index, e.g. 0")
    p.add_argument("--five-crop", action="store_true",
                   help="average the softmax over five crops (the seed checkpoint's evaluation)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--attention", metavar="OUT.png",
                   help="draw one image's attention (rollout, and the last block's class-token "
                        "attention per head) over the image, as a PNG (backends that give the "
                        "probabilities: torch, cpp)")
    p.add_argument("--features", metavar="OUT.npy",
                   help="also save the pre-logits embeddings (class token after the final norm), "
                        "one row per classified image in order, as a float32 .npy file")
    return p


def _batches(paths: list[str], cfg: ViTConfig, batch_size: int, crops: str,
             errors: list[str]) -> Iterator[tuple[list[str], np.ndarray]]:
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            arrays.append(preprocess(path, cfg, crops=crops))
            names.append(path)
        except ImageError as exc:
            errors.append(str(exc))
        if len(names) == batch_size:
            yield names, _stack(arrays)
            names, arrays = [], []
    if names:
        yield names, _stack(arrays)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    x = np.stack(arrays)
    return x.reshape(-1, *x.shape[-3:])  # five-crop: (n, 5, 3, H, W) -> (n * 5, 3, H, W)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False,
                disable=total <= 8 or not sys.stderr.isatty())


def topk_entries(probs: np.ndarray, k: int, names: tuple[str, ...]) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": names[i], "probability": float(probs[i])} for i in order]


def _print_predictions(results: list[dict]) -> None:
    for r in results:
        print(Path(r["image"]).name)
        for rank, e in enumerate(r["topk"], 1):
            index = f"  (class {e['index']})" if e["label"] != f"class {e['index']}" else ""
            print(f"  {rank:2d}. {100 * e['probability']:6.2f}%  {e['label']}{index}")


def _describe_weights(source: str, cfg: ViTConfig) -> str:
    return f"{source}, {cfg.name}"


# ---- one backend -------------------------------------------------------------------------------

def run_one(args: argparse.Namespace, paths: list[str], crops: str) -> int:
    cls = backends.require(args.backend)
    options = backend_options(args.backend, args.threads, args.device)
    cfg, tensors, source = resolve_weights(args.weights, _config_arg(args), args.num_heads,
                                           args.image_size)
    if args.features:
        check_writable(args.features)
    if args.attention:
        check_writable(args.attention)
        cls.require_attention_maps()  # refused before the work
        if len(paths) != 1 or crops != "center":
            raise ValueError("--attention draws one image's maps: give exactly one image, "
                             "without --five-crop")
    model = build(args.backend, cfg, tensors, source, args.precision, bool(args.features),
                  labels=recorded_labels(args.weights), **options)
    _note_untrained(args)
    names = model.class_names()
    n_crops = 5 if crops == "five" else 1
    results, errors, seconds, count = [], [], 0.0, 0
    features: list[np.ndarray] = []
    with _progress(len(paths), model.backend) as bar:
        for batch_names, x in _batches(paths, cfg, args.batch_size, crops, errors):
            start = time.perf_counter()
            if args.features:
                logits, feats = model.logits_and_features(x)
                features.append(feats.reshape(len(batch_names), n_crops, -1).mean(axis=1))
            else:
                logits = model(x)
            seconds += time.perf_counter() - start
            count += len(batch_names)
            probs = probabilities(logits, n_crops)
            batch = [{"image": n, "topk": topk_entries(p, args.topk, names)}
                     for n, p in zip(batch_names, probs)]
            results += batch
            if not args.json:
                _print_predictions(batch)
            bar.update(len(batch_names))
    if args.features and features:
        np.save(args.features, np.concatenate(features).astype(np.float32))
    if args.attention and results:
        from ..attention_maps import figure

        x = preprocess(paths[0], cfg)[None]
        top = results[0]["topk"][0]
        figure(x[0], model.attention_maps(x), cfg, args.attention,
               title=f"{Path(paths[0]).name}: {cfg.name} on {model.backend}, weights {source}; "
                     f"top-1 {top['label']} "
                     f"({100 * top['probability']:.1f}%)")
        print(f"attention maps: {args.attention}", file=sys.stderr)
    ms = 1000 * seconds / count if count else None
    if args.json:
        print(json.dumps({
            "polyvit": __version__, "backend": model.backend, "precision": model.precision,
            "weights": source, "config": cfg.name, "crops": crops,
            "ms_per_image": ms, "images": count, "results": results, "errors": errors}, indent=2))
    else:
        if ms is not None:
            print(f"backend {model.backend} | precision {model.precision} | weights "
                  f"{_describe_weights(source, cfg)} | {ms:.1f} ms/image over {count} image(s), "
                  f"batch size {args.batch_size}{', five crops' if n_crops == 5 else ''}")
    for e in errors:
        print(f"vit-run: error: {e}", file=sys.stderr)
    return 1 if errors else 0


# ---- every backend -----------------------------------------------------------------------------

def run_all(args: argparse.Namespace, paths: list[str], crops: str) -> int:
    ok, reason = backends.available_backends().get("torch", (False, "not registered"))
    if not ok:
        raise BackendError(f"--backend all compares against the torch reference, which is not "
                           f"available: {reason}")
    cfg, tensors, source = resolve_weights(args.weights, _config_arg(args), args.num_heads,
                                           args.image_size)
    _note_untrained(args)
    errors: list[str] = []
    inputs = list(_batches(paths, cfg, args.batch_size, crops, errors))
    if not inputs:
        for e in errors:
            print(f"vit-run: error: {e}", file=sys.stderr)
        return 1
    image_names = [n for names, _ in inputs for n in names]
    x_all = [x for _, x in inputs]
    torch_cls = backends.require("torch")
    ref64, ref32 = torch_cls(cfg, tensors, "fp64"), torch_cls(cfg, tensors, "fp32")
    oracle = np.concatenate([ref64.logits(x) for x in x_all])
    torch32 = np.concatenate([ref32.forward(x) for x in x_all])
    tol = parity.tolerance(torch32, oracle)

    rows = []
    available = {n: ok for n, (ok, _) in backends.available_backends().items()}
    for name in backends.names():
        if not available[name]:
            continue
        cls = backends.backend_class(name)
        if args.precision not in cls.precisions:
            rows.append({"backend": name, "precision": args.precision,
                         "skipped": f"no {args.precision}"})
            continue
        options = {"threads": args.threads} if args.threads and "threads" in cls.option_names() else {}
        if args.device is not None and "device" in cls.options:
            options["device"] = args.device
        model = Model(cls(cfg, tensors, args.precision, **options), source)
        model(x_all[0])  # warm-up: first calls may build caches or kernels
        seconds, outs = 0.0, []
        with _progress(len(image_names), name) as bar:
            for x, (names, _) in zip(x_all, inputs):
                start = time.perf_counter()
                outs.append(model(x))
                seconds += time.perf_counter() - start
                bar.update(len(names))
        result = parity.compare(np.concatenate(outs), oracle, tol)
        rows.append({
            "backend": name, "precision": args.precision,
            "max_abs_error": result.max_abs_error, "tolerance": tol,
            "top1_agreement": result.top1_agreement,
            "parity": ("pass" if result.passed else "fail") if args.precision == "fp32" else "n/a",
            "ms_per_image": 1000 * seconds / len(image_names)})

    n_crops = 5 if crops == "five" else 1
    names = class_names(cfg.num_classes, recorded_labels(args.weights))
    results = [{"image": n, "topk": topk_entries(p, args.topk, names)}
               for n, p in zip(image_names, probabilities(oracle, n_crops))]
    if args.json:
        print(json.dumps({"polyvit": __version__, "weights": source, "config": cfg.name,
                          "reference": "torch fp64", "crops": crops, "backends": rows,
                          "results": results, "errors": errors}, indent=2))
    else:
        print(f"predictions of the float64 reference ({_describe_weights(source, cfg)}):")
        _print_predictions(results)
        print()
        _print_table(rows, len(image_names), n_crops)
    for e in errors:
        print(f"vit-run: error: {e}", file=sys.stderr)
    failed = any(r.get("parity") == "fail" for r in rows)
    return 1 if errors or failed else 0


def _print_table(rows: list[dict], images: int, crops: int) -> None:
    print(f"{'backend':<8} {'precision':<9} {'max|dlogit|':>12} {'bound':>10} {'top-1':>7} "
          f"{'parity':>6} {'ms/image':>9}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['backend']:<8} {r['precision']:<9} skipped: {r['skipped']}")
            continue
        print(f"{r['backend']:<8} {r['precision']:<9} {r['max_abs_error']:12.3g} "
              f"{r['tolerance']:10.3g} {100 * r['top1_agreement']:6.1f}% {r['parity']:>6} "
              f"{r['ms_per_image']:9.2f}")
    print(f"(against the torch float64 reference on {images} image(s) x {crops} crop(s); "
          "times after one warm-up call)")


def _note_untrained(args: argparse.Namespace) -> None:
    if args.weights is None:
        print(UNTRAINED_NOTE, file=sys.stderr)


def _config_arg(args: argparse.Namespace) -> str | None:
    if args.config and args.weights:
        raise ValueError("--config chooses the built-in weights' model; a checkpoint given "
                         "with --weights carries its own")
    return args.config


def expand_folders(images: list[str]) -> list[str]:
    """A folder stands for the image files below it (sorted); other arguments stay as given, so
    a missing or broken file is still reported by name."""
    out: list[str] = []
    for item in images:
        if os.path.isdir(item):
            skipped: list[str] = []
            found = list(walk_images(item, skipped))
            for line in skipped:
                print(f"vit-run: warning: {line}", file=sys.stderr)
            if not found:
                raise InputError(f"{item}: no images found in the folder")
            out += found
        else:
            out.append(item)
    return out


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    paths = expand_folders(args.images) or [sample_image_path()]
    crops = "five" if args.five_crop else "center"
    if args.backend == "all":
        if args.features or args.attention:
            raise ValueError("--features and --attention take one backend's outputs; name the "
                             "backend")
        return run_all(args, paths, crops)
    return run_one(args, paths, crops)


def main(argv: list[str] | None = None) -> int:
    return run_main("vit-run", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
