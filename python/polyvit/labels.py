"""ImageNet-1k class names, bundled (index order of the standard 1000-class release)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    text = resources.files("polyvit").joinpath("data/imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line)


def class_names(num_classes: int, recorded: list[str] | None = None) -> tuple[str, ...]:
    """Names for a head of num_classes outputs: the ones the checkpoint records (a model trained
    by vit-train records its dataset's classes), else ImageNet-1k's, else "class N"."""
    if recorded is not None and len(recorded) == num_classes:
        return tuple(recorded)
    if num_classes == 1000:
        return imagenet_classes()
    return tuple(f"class {i}" for i in range(num_classes))


def sample_image_path() -> str:
    return str(resources.files("polyvit").joinpath("data/sample.jpg"))
