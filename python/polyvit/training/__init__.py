"""Training and fine-tuning (vit-train): the trainable ViT, its recipe and the loop.

    from polyvit.training import TrainConfig, train
    results = train(TrainConfig(epochs=50), "runs/digits")     # or: vit-train --data digits --out DIR

model.py      TrainableViT: the reference forward with autograd, dropout and drop-path
config.py     TrainConfig: the recipe, one dataclass, key=value overrides
trainer.py    the loop: DDP, AMP, accumulation, clipping, EMA, early stopping, checkpoints
augment.py    batched augmentation in torch (crop/flip/rotate, jitter, RandAugment, mixup/cutmix)
adamw8bit.py  AdamW with block-wise 8-bit moments
data.py       a dataset decoded once into the pixels vit-eval sees
Importing this package imports torch; polyvit itself does not need it.
"""

from .config import TrainConfig
from .model import TrainableViT
from .trainer import train

__all__ = ["TrainConfig", "TrainableViT", "train"]
