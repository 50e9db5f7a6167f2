"""out = gelu(x + bias), element-wise over (M, N): the standalone form of fc1's fused epilogue
(the op-level tests and the per-op charts run it; the forward never does)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gelu import gelu_erf, gelu_tanh
from .runtime import block, interpreting, tuned

FORMS = {"erf": 1, "tanh": 2}
CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w)
           for bm, bn, w in [(1, 1024, 4), (4, 256, 4), (8, 512, 8), (16, 128, 4)]]


@tuned(CONFIGS, key=["M", "N"])
@triton.jit
def bias_gelu_kernel(x_ptr, bias_ptr, out_ptr, M, N, FORM: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    at = rm[:, None] * N + rn[None, :]
    x = tl.load(x_ptr + at, mask=mask, other=0.0) + tl.load(bias_ptr + rn, mask=rn < N)[None, :]
    if FORM == 1:
        y = gelu_erf(x)
    else:
        y = gelu_tanh(x)
    tl.store(out_ptr + at, y, mask=mask)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor, form: str = "erf") -> torch.Tensor:
    """x (M, N) fp32 contiguous, bias (N,) -> gelu(x + bias), (M, N) fp32."""
    m, n = x.shape
    out = torch.empty_like(x)
    meta = dict(BLOCK_M=block(m, floor=1), BLOCK_N=block(n, floor=1)) if interpreting() else {}
    bias_gelu_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))](
        x, bias, out, m, n, FORM=FORMS[form], **meta)
    return out
