"""out[r, c] = x[r, c] + y[r, c], or + y[c] for a row vector y broadcast over the rows.

Rows of x and out may be strided views: the forward adds the position embeddings of the patch
tokens (one row vector of N*D values) to each image's normed patch embeddings and writes them
after the class token of the (B, T, D) token buffer. Standalone for the per-op charts too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import block, interpreting, tuned

CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w)
           for bm, bn, w in [(1, 1024, 4), (4, 256, 4), (8, 512, 8), (1, 4096, 8)]]


@tuned(CONFIGS, key=["M", "N"])
@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, M, N, stride_xm, stride_ym, stride_om,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    x = tl.load(x_ptr + rm[:, None] * stride_xm + rn[None, :], mask=mask)
    y = tl.load(y_ptr + rm[:, None] * stride_ym + rn[None, :], mask=mask)
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], x + y, mask=mask)


def add(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, N) fp32 with unit column stride; y (M, N) or (N,) fp32 contiguous; out (M, N)
    (default new) -> out = x + y."""
    m, n = x.shape
    if out is None:
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    stride_ym = 0 if y.dim() == 1 else y.stride(0)
    meta = dict(BLOCK_M=block(m, floor=1), BLOCK_N=block(n, floor=1, cap=4096)) \
        if interpreting() else {}
    add_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))](
        x, y, out, m, n, x.stride(0), stride_ym, out.stride(0), **meta)
    return out
