"""out = epilogue(x @ weight.T + bias): the GEMM of every linear layer, with its epilogue fused.

x (M, K) rows with a row stride, weight (N, K) in torch's layout, fp32 accumulation in
registers. Epilogues: NONE, GELU_ERF, GELU_TANH (fc1), RESIDUAL (proj and fc2: + the residual
stream, which may be a strided view: the class-token rows of the last block). The result is
stored in out's dtype: the next op's input precision.

Programs are ordered in groups of GROUP_M row blocks so that neighbouring programs share their
weight tiles in L2 (the order of Triton's matmul tutorial).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gelu import gelu_erf, gelu_tanh
from .runtime import block, dot_precision, interpreting, tuned

EPILOGUES = {"none": 0, "gelu_erf": 1, "gelu_tanh": 2, "residual": 3}

CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
                         num_warps=w, num_stages=s)
           for bm, bn, bk, w, s in [(128, 128, 32, 8, 3), (128, 64, 32, 4, 4),
                                    (64, 128, 32, 4, 4), (64, 64, 32, 4, 4),
                                    (32, 64, 32, 4, 4), (16, 64, 64, 4, 4),
                                    (128, 256, 64, 8, 3), (64, 128, 64, 4, 3)]]


@tuned(CONFIGS, key=["M", "N", "K", "EPILOGUE"])
@triton.jit
def linear_kernel(x_ptr, w_ptr, bias_ptr, res_ptr, out_ptr, M, N, K,
                  stride_xm, stride_wn, stride_rm, stride_om,
                  HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    blocks_m = (M + BLOCK_M - 1) // BLOCK_M  # not tl.cdiv: a nested jit call, slow interpreted
    blocks_n = (N + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_M * blocks_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(blocks_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_m
    pid_n = (pid % per_group) // group_m

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    in_m = rm < M
    in_n = rn < N
    x_tile = x_ptr + rm[:, None] * stride_xm + rk[None, :]    # (BLOCK_M, BLOCK_K)
    w_tile = w_ptr + rn[None, :] * stride_wn + rk[:, None]    # (BLOCK_K, BLOCK_N): weight.T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        in_k = rk + k0 < K
        a = tl.load(x_tile, mask=in_m[:, None] & in_k[None, :], other=0.0)
        b = tl.load(w_tile, mask=in_k[:, None] & in_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        x_tile += BLOCK_K
        w_tile += BLOCK_K

    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=in_n, other=0.0)[None, :]
    mask = in_m[:, None] & in_n[None, :]
    if EPILOGUE == 1:
        acc = gelu_erf(acc)
    elif EPILOGUE == 2:
        acc = gelu_tanh(acc)
    elif EPILOGUE == 3:
        acc += tl.load(res_ptr + rm[:, None] * stride_rm + rn[None, :], mask=mask, other=0.0)
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=mask)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           epilogue: str = "none", residual: torch.Tensor | None = None,
           out_dtype: torch.dtype = torch.float32, tf32: bool = False,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) with unit column stride, weight (N, K) contiguous in x's dtype, bias (N,) fp32,
    residual (M, N) fp32 with unit column stride -> (M, N) in out_dtype, written to out when
    given (a contiguous (M, N) buffer that aliases no input)."""
    m, k = x.shape
    n = weight.shape[0]
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x.device)
    code = EPILOGUES[epilogue]
    meta = {}
    if interpreting():
        meta = dict(BLOCK_M=block(m), BLOCK_N=block(n), BLOCK_K=block(k), GROUP_M=8)

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    linear_kernel[grid](
        x, weight, bias if bias is not None else out, residual if residual is not None else out,
        out, m, n, k, x.stride(0), weight.stride(0),
        residual.stride(0) if residual is not None else 0, out.stride(0),
        HAS_BIAS=bias is not None, EPILOGUE=code, DOT_PRECISION=dot_precision(x.dtype, tf32),
        **meta)
    return out
