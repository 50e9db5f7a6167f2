"""The ViT forward in Triton kernels, op for op the order of polyvit.reference.forward.

Precisions: the GEMM operands (weights, LayerNorm outputs, qkv, attention outputs, fc1's GELU
output) are held in the compute dtype, fp32 for "fp32" and "tf32", bf16 or fp16 otherwise;
the residual stream, biases, LayerNorm parameters, statistics and every accumulation stay fp32.
tf32 differs from fp32 only in tl.dot's input precision.

Per block, on the buffers of a Plan (x the (B*T, D) fp32 residual stream in `tokens`):
    normed = layernorm(x)                    compute dtype
    qkv    = linear(normed, qkv)             compute dtype
    attn   = attention(qkv)                  compute dtype, (B, Q, D)
    mid    = linear(attn, proj, + x)         fp32
    normed = layernorm(mid)
    hidden = linear(normed, fc1, gelu)       compute dtype
    x      = linear(hidden, fc2, + mid)      fp32, into `tokens` again (x is dead by then)
The last block computes only the class token's row (Q = 1), as in the reference: its attention
still reads every token's keys and values, and its residual is the strided view x[:, 0].

Each batch size gets a Plan: its activation buffers, a lock (calls of one size share them),
and on a GPU optionally a CUDA graph of the whole forward, captured after a warm-up run that
autotunes every kernel for that shape and replayed afterwards: a ViT-S/32 forward is about 85
launches, which at batch 1 cost more than their math.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from ...config import ViTConfig
from .._native import BATCH_SIZES_KEPT, BatchCache
from .add import add
from .attention import attention
from .layernorm import layernorm
from .linear import linear
from .patch_embed import patch_embed
from .runtime import launches

COMPUTE_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                  "fp16": torch.float16}
GEMM_WEIGHTS = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight",
                "head.weight")


@dataclass
class Plan:
    """The buffers of one batch size's forward (and its CUDA graph, when captured)."""
    tokens: torch.Tensor    # (B, T, D) fp32: the residual stream
    normed: torch.Tensor    # (B*T, D) compute dtype
    qkv: torch.Tensor       # (B*T, 3D) compute dtype
    attn: torch.Tensor      # (B*T, D) compute dtype
    mid: torch.Tensor       # (B*T, D) fp32
    hidden: torch.Tensor    # (B*T, M) compute dtype
    cls: torch.Tensor       # (B, D) fp32: the class token after the last block
    features: torch.Tensor  # (B, D) compute dtype
    logits: torch.Tensor    # (B, classes) fp32
    patches: torch.Tensor | None  # (B*N, D) fp32 x 2, with patch_norm_post only
    lock: threading.Lock = field(default_factory=threading.Lock)
    graph: Any = None             # the CUDA graph, and its input buffer (B, C, H, W) fp32
    images: torch.Tensor | None = None


class TritonForward:
    """The weights on one device and the forward over them."""

    def __init__(self, cfg: ViTConfig, weights: Mapping[str, np.ndarray], precision: str,
                 device: torch.device, cuda_graph: bool) -> None:
        self.cfg = cfg
        self.device = device
        self.dtype = COMPUTE_DTYPES[precision]
        self.tf32 = precision == "tf32"
        self.cuda_graph = cuda_graph and device.type == "cuda"
        d = cfg.embed_dim
        self.w: dict[str, torch.Tensor] = {}
        for name, value in weights.items():
            t = torch.from_numpy(np.ascontiguousarray(value, np.float32)).to(device)
            if name == "patch_embed.proj.weight":
                t = t.reshape(d, -1)                         # (D, C*P*P): the GEMM's B
            if name.endswith(GEMM_WEIGHTS) or name == "patch_embed.proj.weight":
                t = t.to(self.dtype)
            self.w[name] = t.contiguous()
        self.w["pos_embed"] = self.w["pos_embed"].reshape(-1, d)                   # (T, D)
        # the class token's row of every image, cls + pos[0], added once here in fp32 exactly
        # as the reference adds it per image
        self.cls_row = self.w["cls_token"].reshape(d) + self.w["pos_embed"][0]
        self.plans: BatchCache[Plan] = BatchCache(self._plan, BATCH_SIZES_KEPT)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) fp32 on the device -> (B, classes) fp32 on the device (a new tensor)."""
        plan = self.plans.get(images.shape[0])
        with plan.lock, launches():
            if plan.graph is not None:
                plan.images.copy_(images)
                plan.graph.replay()
            else:
                self._run(plan, images)
            return plan.logits.clone()

    # ---- the forward, kernel by kernel ----------------------------------------------------------

    def _run(self, plan: Plan, images: torch.Tensor) -> None:
        cfg, w, tf32 = self.cfg, self.w, self.tf32
        self._embed(plan, images)
        b, t, d = plan.tokens.shape
        x = plan.tokens.reshape(b * t, d)
        for i in range(cfg.depth):
            p = f"blocks.{i}."
            last = i == cfg.depth - 1
            q = 1 if last else t
            rows = b * q
            layernorm(x, w[p + "norm1.weight"], w[p + "norm1.bias"], cfg.ln_eps, out=plan.normed)
            linear(plan.normed, w[p + "attn.qkv.weight"], w.get(p + "attn.qkv.bias"),
                   tf32=tf32, out=plan.qkv)
            attn = plan.attn[:rows]
            attention(plan.qkv.reshape(b, t, 3 * d), cfg.num_heads, q, tf32=tf32,
                      out=attn.reshape(b, q, d))
            residual = plan.tokens[:, 0] if last else x                  # (B*Q, D)
            mid, normed, hidden = plan.mid[:rows], plan.normed[:rows], plan.hidden[:rows]
            linear(attn, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"], "residual",
                   residual, tf32=tf32, out=mid)
            layernorm(mid, w[p + "norm2.weight"], w[p + "norm2.bias"], cfg.ln_eps, out=normed)
            linear(normed, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"], f"gelu_{cfg.gelu}",
                   tf32=tf32, out=hidden)
            linear(hidden, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"], "residual", mid,
                   tf32=tf32, out=plan.cls if last else x)
        layernorm(plan.cls, w["norm.weight"], w["norm.bias"], cfg.ln_eps, out=plan.features)
        linear(plan.features, w["head.weight"], w["head.bias"], tf32=tf32, out=plan.logits)

    def _embed(self, plan: Plan, images: torch.Tensor) -> None:
        """The token buffer: the class row, then the patch embeddings + position embeddings."""
        cfg, w, x = self.cfg, self.w, plan.tokens
        b, t, d = x.shape
        x[:, 0] = self.cls_row
        norm_pre = ((w["patch_embed.norm_pre.weight"], w["patch_embed.norm_pre.bias"], cfg.ln_eps)
                    if cfg.patch_norm_pre else None)
        args = (images, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], cfg.patch_size)
        if not cfg.patch_norm_post:  # bias and position embedding in the GEMM's epilogue
            patch_embed(*args, out=x, out_row0=1, pos=w["pos_embed"], norm_pre=norm_pre,
                        tf32=self.tf32)
            return
        projected, normed = plan.patches
        n = t - 1
        patch_embed(*args, out=projected.reshape(b, n, d), norm_pre=norm_pre, tf32=self.tf32)
        layernorm(projected, w["patch_embed.norm.weight"], w["patch_embed.norm.bias"],
                  cfg.ln_eps, out=normed)
        add(normed.reshape(b, n * d), w["pos_embed"][1:].reshape(-1),
            out=x[:, 1:].reshape(b, n * d))

    # ---- plans and CUDA graphs ----------------------------------------------------------------

    def _plan(self, batch: int) -> Plan:
        cfg, dev, cd = self.cfg, self.device, self.dtype
        d, n = cfg.embed_dim, (cfg.image_size // cfg.patch_size) ** 2
        rows = batch * (n + 1)

        def empty(*shape, dtype=torch.float32):
            return torch.empty(shape, dtype=dtype, device=dev)

        plan = Plan(
            tokens=empty(batch, n + 1, d), normed=empty(rows, d, dtype=cd),
            qkv=empty(rows, 3 * d, dtype=cd), attn=empty(rows, d, dtype=cd), mid=empty(rows, d),
            hidden=empty(rows, cfg.mlp_dim, dtype=cd), cls=empty(batch, d),
            features=empty(batch, d, dtype=cd), logits=empty(batch, cfg.num_classes),
            patches=(empty(batch * n, d), empty(batch * n, d)) if cfg.patch_norm_post else None)
        if self.cuda_graph:
            plan.images = torch.zeros((batch, cfg.in_chans, cfg.image_size, cfg.image_size),
                                      dtype=torch.float32, device=dev)
            self._capture(plan)
        return plan

    def _capture(self, plan: Plan) -> None:
        """Record the forward on plan.images as a CUDA graph. The warm-up run on a side stream
        autotunes every kernel for this shape first: autotuning times kernels, which cannot
        happen inside a capture."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._run(plan, plan.images)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._run(plan, plan.images)
        plan.graph = graph
