"""What the console scripts share: one-line errors and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from typing import Any, Callable

from ..errors import PolyvitError


def run_main(prog: str, main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (PolyvitError, OSError, ValueError, TypeError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"{prog}: error: out of memory; try a smaller --batch-size", file=sys.stderr)
        return 1


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def backend_options(backend: str, threads: int | None, device: Any) -> dict[str, Any]:
    """--threads and --device as backend options; --device only for a backend that takes one."""
    from .. import backends
    from ..errors import BackendError

    options: dict[str, Any] = {"threads": threads} if threads else {}
    if device is not None:
        if "device" not in backends.backend_class(backend).option_names():
            raise BackendError(f"--device chooses the device of the sycl and cuda backends; "
                               f"backend {backend!r} takes no device")
        options["device"] = device
    return options


def add_model_arguments(p, weights_option: bool = True) -> None:
    """The arguments that choose the model, the same in vit-run, vit-predict and vit-export:
    --weights (unless the script takes the checkpoint as a positional argument), --config,
    --num-heads, --image-size."""
    from ..config import PRESETS

    if weights_option:
        p.add_argument("--weights", help="checkpoint in any supported layout (default: built-in "
                                         "untrained seeded weights)")
    p.add_argument("--config", default=None, choices=sorted(PRESETS),
                   help="preset for the built-in weights when no checkpoint is given "
                        "(default vit_small_patch32_224)")
    p.add_argument("--num-heads", type=positive_int,
                   help="head count, for checkpoints that do not record it")
    p.add_argument("--image-size", type=positive_int,
                   help="run at this image size (a multiple of the patch size; the position "
                        "embedding is resampled bicubically)")


def add_engine_arguments(p) -> None:
    """--engine local|ray and the Ray cluster's options (vit-predict, vit-eval)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): this machine; ray: Ray Data, on the cluster at "
                        "--ray-address / RAY_ADDRESS or a new local one")
    p.add_argument("--ray-address", help="Ray cluster address (host:port, ray://host:port or "
                                         "auto); default RAY_ADDRESS, else a new local cluster")
    p.add_argument("--ray-actors", type=positive_int, default=1,
                   help="model actors with --engine ray (default 1)")
