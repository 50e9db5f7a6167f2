"""What the model looks at: attention rollout and the class token's attention, drawn over the
image the model saw.

maps: Model.attention_maps(x), one (B, heads, T, T) array per block, token 0 the class token.

- rollout (Abnar & Zuidema, 2020): each block's head-averaged attention mixed with the identity
  for the residual path, 0.5 A + 0.5 I, rows renormalised, multiplied through the blocks; the
  class token's row over the patches says how much each patch reached the class token.
- class_attention: the last block's class-token query over the patches, per head.
"""

from __future__ import annotations

import numpy as np

from .config import ViTConfig


def rollout(maps: list[np.ndarray]) -> np.ndarray:
    """(B, N) patch relevance for the class token (N = T - 1 patches), rows summing to 1."""
    a = [m.astype(np.float64).mean(axis=1) for m in maps]               # (B, T, T) per block
    t = a[0].shape[-1]
    eye = np.eye(t)
    joint = np.broadcast_to(eye, a[0].shape).copy()
    for block in a:
        mixed = 0.5 * block + 0.5 * eye
        mixed /= mixed.sum(axis=-1, keepdims=True)
        joint = mixed @ joint
    cls = joint[:, 0, 1:]
    return cls / cls.sum(axis=-1, keepdims=True)


def class_attention(maps: list[np.ndarray]) -> np.ndarray:
    """(B, heads, N): the last block's class-token attention over the patches."""
    return maps[-1][:, :, 0, 1:].astype(np.float64)


def image_of(x: np.ndarray, cfg: ViTConfig) -> np.ndarray:
    """A preprocessed (3, H, W) input back to the (H, W, 3) uint8 crop the model saw."""
    rule = cfg.preprocessing
    rgb = x.transpose(1, 2, 0) * np.asarray(rule.std) + np.asarray(rule.mean)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def figure(x: np.ndarray, maps: list[np.ndarray], cfg: ViTConfig, out: str,
           title: str = "", index: int = 0) -> None:
    """One PNG: the input crop, the rollout over it, and each head's last-block class attention
    over it (maps upsampled to the image, bilinear)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    g = cfg.grid_size
    picture = image_of(x, cfg)
    size = picture.shape[:2][::-1]

    def upsampled(patch_map: np.ndarray) -> np.ndarray:
        m = patch_map.reshape(g, g).astype(np.float32)
        m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
        return np.asarray(Image.fromarray(m, "F").resize(size, Image.Resampling.BILINEAR))

    heads = class_attention(maps)[index]
    panels = [("input (model's crop)", None), ("attention rollout", rollout(maps)[index])] + \
        [(f"last block, head {h}: class token", heads[h]) for h in range(len(heads))]
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, patch_map) in zip(axes.flat, panels):
        ax.imshow(picture)
        if patch_map is not None:
            ax.imshow(upsampled(patch_map), cmap="inferno", alpha=0.6)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
