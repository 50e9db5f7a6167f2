"""out = softmax(x) over each row: exp(x - max) / sum(exp(x - max)), whole rows in registers.
Standalone for the per-op charts; the forward fuses softmax into attention."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import block, interpreting, tuned

CONFIGS = [triton.Config({"ROWS": r}, num_warps=w) for r, w in [(1, 4), (2, 4), (4, 8), (8, 8)]]


@tuned(CONFIGS, key=["M", "C"])
@triton.jit
def softmax_kernel(x_ptr, out_ptr, M, C, BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    mask = (rows < M)[:, None] & (cols < C)[None, :]
    at = rows[:, None] * C + cols[None, :]
    x = tl.load(x_ptr + at, mask=mask, other=float("-inf")).to(tl.float32)
    x = tl.where((rows < M)[:, None], x, 0.0)  # rows past M: zeros, not all -inf (NaN max)
    e = tl.exp(x - tl.max(x, axis=1)[:, None])
    tl.store(out_ptr + at, e / tl.sum(e, axis=1)[:, None], mask=mask)


def softmax(x: torch.Tensor) -> torch.Tensor:
    """x (M, C) fp32 contiguous -> row softmax (M, C) fp32."""
    m, c = x.shape
    out = torch.empty_like(x)
    block_c = triton.next_power_of_2(c)
    meta = dict(ROWS=block(m, floor=1, cap=max(1, 16384 // block_c))) if interpreting() else {}
    softmax_kernel[lambda meta: (triton.cdiv(m, meta["ROWS"]),)](x, out, m, c, BLOCK_C=block_c,
                                                                  **meta)
    return out
