"""out = (x - mean) / sqrt(var + eps) * weight + bias over the last axis, with the biased variance.

Each program normalises ROWS whole rows held in registers (C up to a few thousand: the
widest LayerNorm in the family is the 3072-wide patch norm of 32 px patches), statistics in
fp32 and in two passes over the registers (mean, then the mean of squared deviations: no
cancellation when |mean| >> std). Rows may be a strided view (the last block's class tokens);
the result is stored in out's dtype, the next GEMM's input precision.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import block, interpreting, tuned

CONFIGS = [triton.Config({"ROWS": r}, num_warps=w) for r, w in [(1, 4), (2, 4), (4, 8), (8, 8)]]


@tuned(CONFIGS, key=["M", "C"])
@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, C, stride_xm, stride_om, eps,
                     BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    in_c = cols < C
    mask = (rows < M)[:, None] & in_c[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
    x = x.to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    centred = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / C
    std = tl.sqrt_rn(var + eps)
    w = tl.load(w_ptr + cols, mask=in_c, other=0.0)
    b = tl.load(b_ptr + cols, mask=in_c, other=0.0)
    y = centred / std[:, None] * w[None, :] + b[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=mask)


def layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
              out_dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None
              ) -> torch.Tensor:
    """x (M, C) with unit column stride, weight and bias (C,) fp32 -> (M, C) in out_dtype,
    written to out when given (rows with unit column stride)."""
    m, c = x.shape
    if out is None:
        out = torch.empty((m, c), dtype=out_dtype, device=x.device)
    block_c = triton.next_power_of_2(c)
    meta = dict(ROWS=block(m, floor=1, cap=max(1, 16384 // block_c))) if interpreting() else {}
    layernorm_kernel[lambda meta: (triton.cdiv(m, meta["ROWS"]),)](
        x, weight, bias, out, m, c, x.stride(0), out.stride(0), eps, BLOCK_C=block_c, **meta)
    return out
