"""What the console scripts share: one-line errors and a non-zero exit, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable

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
