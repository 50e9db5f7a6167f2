"""TrainConfig: the whole training recipe in one dataclass, overridable as key=value.

vit-train prints it at start and stores it in last.pt and in the exported model's metadata, so
every number a run reports can be traced to the recipe that produced it. The defaults are the
recipe for scikit-learn's digits (a small ViT from scratch, about a minute on two cores); for
other data, set model=, image_size= and the augmentation keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ConfigError

OPTIMIZERS = ("adamw", "adamw8bit")
AMP_MODES = ("off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")

# Keys a resumed run may change: they decide how long to go on or how the run is watched, never
# what a step computes. Any other difference is "a checkpoint of another config".
RESUMABLE_CHANGES = ("epochs", "patience", "threads", "workers", "tensorboard", "wandb",
                     "wandb_project", "progress", "checkpoint_every")


@dataclass
class TrainConfig:
    # -- data and model
    data: str = "digits"             # "digits" or a dataset path (docs/datasets.md)
    model: str = "vit_digits"        # a preset (polyvit.PRESETS), when not fine-tuning
    init: str = ""                   # fine-tune from this checkpoint (any layout polyvit imports)
    image_size: int = 0              # 0: the model's; else the position embedding is resampled
    freeze_backbone: bool = False    # train the head alone (a linear probe)
    drop: float = 0.0                # dropout after attention/MLP projections
    attn_drop: float = 0.0           # dropout on attention probabilities
    drop_path: float = 0.1           # stochastic depth of the last block (linear from 0)
    # -- optimisation
    epochs: int = 100
    batch_size: int = 64             # the global batch (over all processes and accumulation)
    accum_steps: int = 1             # gradient accumulation: micro-batches per optimizer step
    optimizer: str = "adamw"         # adamw | adamw8bit (block-wise 8-bit moments)
    lr: float = 2e-3                 # peak learning rate, after the warmup
    warmup_epochs: float = 10.0      # linear warmup, then half a cosine period down to 0
    weight_decay: float = 0.05       # not applied to norms, biases, cls token, pos embedding
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0           # max global gradient norm; 0 = off
    label_smoothing: float = 0.1
    ema: float = 0.998               # decay of an exponential moving average of the weights
                                     # (evaluated and exported instead of the raw ones); 0 = off
    patience: int = 0                # early stopping: epochs without a better val top-1; 0 = off
    # -- augmentation (polyvit.training.augment)
    crop_scale: float = 0.75         # RandomResizedCrop's smallest area fraction; 1 = no crop
    crop_ratio: float = 1.15         # aspect ratios in [1/r, r]
    hflip: float = 0.0               # horizontal flip probability (digits are not symmetric)
    rotate: float = 10.0             # RandomRotation range in degrees
    color_jitter: float = 0.0        # brightness/contrast/saturation strength
    randaugment_ops: int = 0         # RandAugment N; 0 = off
    randaugment_magnitude: int = 9   # RandAugment M (of 30)
    mixup: float = 0.0               # mixup alpha; 0 = off
    cutmix: float = 0.0              # cutmix alpha; 0 = off
    # -- machinery
    amp: str = "off"                 # off | bf16 (autocast; CPU or CUDA) | fp16 (CUDA, GradScaler)
    compile: bool = False            # torch.compile the model
    device: str = "auto"             # auto (cuda when available) | cpu | cuda
    seed: int = 0
    threads: int = 0                 # torch intra-op threads; 0 = torch's default
    workers: int = 4                 # image decoding threads when the dataset is read
    eval_batch_size: int = 256
    checkpoint_every: int = 0        # also write last.pt every N optimizer steps; 0 = each epoch
    progress: bool = True            # a progress bar per epoch
    tensorboard: bool = True         # DIR/tensorboard/ (when the tensorboard package is there)
    wandb: bool = False              # log to Weights & Biases (needs wandb installed)
    wandb_project: str = "polyvit"

    def __post_init__(self) -> None:
        self.check()

    # ---- validation ---------------------------------------------------------------------------

    def check(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("epochs", "batch_size", "accum_steps", "eval_batch_size", "workers",
                     "randaugment_magnitude"):
            need(getattr(self, name) >= 1 or (name == "randaugment_magnitude"
                                               and getattr(self, name) == 0),
                 f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("image_size", "threads", "patience", "randaugment_ops", "checkpoint_every"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.batch_size % self.accum_steps == 0,
             f"batch_size {self.batch_size} is not a multiple of accum_steps {self.accum_steps}")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        need(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        need(self.device in DEVICES, f"device must be one of {DEVICES}, got {self.device!r}")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
             f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        need(0 <= self.label_smoothing < 1,
             f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.ema < 1, f"ema must be in [0, 1) (0 = off), got {self.ema}")
        for name in ("drop", "attn_drop", "drop_path", "hflip"):
            need(0 <= getattr(self, name) < 1 or (name == "hflip" and self.hflip == 1),
                 f"{name} must be in [0, 1), got {getattr(self, name)}")
        need(0 < self.crop_scale <= 1, f"crop_scale must be in (0, 1], got {self.crop_scale}")
        need(self.crop_ratio >= 1, f"crop_ratio must be >= 1, got {self.crop_ratio}")
        need(self.rotate >= 0 and self.color_jitter >= 0 and self.mixup >= 0 and self.cutmix >= 0,
             "rotate, color_jitter, mixup and cutmix must be >= 0")
        need(bool(self.data), "data is empty: give 'digits' or a dataset path")

    # ---- key=value ----------------------------------------------------------------------------

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def override(self, assignments: list[str]) -> tuple["TrainConfig", set[str]]:
        """A copy with `key=value` assignments applied (values parsed by the field's type), and
        the set of keys they named. An unknown key is an error that lists the valid ones."""
        changes: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(self)}
        for text in assignments:
            key, sep, raw = text.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ConfigError(f"expected key=value, got {text!r}")
            if key not in types:
                raise ConfigError(f"unknown config key {key!r}; valid keys: "
                                  f"{', '.join(self.keys())}")
            changes[key] = _parse(key, raw.strip(), getattr(self, key))
        return dataclasses.replace(self, **changes), set(changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"unknown config keys {unknown} (a checkpoint of another polyvit "
                              f"version?); valid keys: {', '.join(cls.keys())}")
        return cls(**data)

    def describe(self) -> str:
        """The config as aligned key = value lines, changed keys marked with '*'."""
        default = TrainConfig()
        width = max(map(len, self.keys()))
        return "\n".join(
            f"  {k:<{width}} = {getattr(self, k)!r}{'  *' if getattr(self, k) != getattr(default, k) else ''}"
            for k in self.keys())

    def differences(self, other: "TrainConfig") -> list[str]:
        return [k for k in self.keys() if getattr(self, k) != getattr(other, k)]


def _parse(key: str, raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} takes true or false, got {raw!r}")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{key} takes an integer, got {raw!r}") from None
    if isinstance(current, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key} takes a number, got {raw!r}") from None
    return raw
