"""The learning-rate schedule: linear warmup, then half a cosine period down to 0.

The original ViT recipe (and miguelmartin75/vit's ViT-S/32): the rate climbs linearly from
peak / warmup to the peak over the warmup steps, then follows peak * (1 + cos(pi * t)) / 2 for
t from 0 to 1 over the remaining steps, reaching 0 at the last one.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of the peak rate for optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * t))
