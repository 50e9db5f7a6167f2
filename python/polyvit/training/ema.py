"""An exponential moving average of the weights (Polyak averaging), evaluated and exported in
place of the raw weights when vit-train's ema= is set.

The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so the average is not
dominated by the random initial weights in a short run.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                # shadow + (1 - d) (v - shadow): exact where v equals the shadow (a frozen
                # weight stays bit for bit what it was, as d*x + (1-d)*x would not)
                self.shadow[k].lerp_(v.detach().float(), 1 - d)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
