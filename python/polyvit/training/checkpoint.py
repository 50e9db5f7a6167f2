"""last.pt: everything a run needs to go on exactly where it stopped, written atomically.

It holds the model, optimizer, LR scheduler, gradient scaler and weight-average states, every
random generator (torch's global one, which drives dropout and drop-path, CUDA's, and the
augmentation generator), the step and the position in the epoch, the early-stopping state, the
metric history and the recipe. Resuming from it continues the same computation: the final
weights equal an uninterrupted run's bit for bit on a CPU (tests/test_train.py kills a run
between steps to check it).

Written to a temporary file in the same folder and renamed over the old one, so a kill during
the write leaves the previous checkpoint whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingError
from ..files import atomic_path

FORMAT = "polyvit-train-1"


def save(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from (a run writes last.pt at the "
                            "end of its first epoch)")
    try:
        # our own file, but still never unpickle code: tensors, numbers, strings and dicts only
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        raise TrainingError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc}); "
                            "it is truncated or corrupt") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(f"{path}: not a vit-train checkpoint (format {FORMAT})")
    return state


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
