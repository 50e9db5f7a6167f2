"""out = softmax(q k^T / sqrt(hd)) v per (batch, head), fused: the probabilities never leave
registers (flash-attention's online softmax).

qkv (B, T, 3D) packed q|k|v as the qkv linear writes it; out (B, Q, D) for the first Q tokens'
queries (Q = T, or 1 in the last block, where only the class token is read). One program per
(query block, batch x head): it loads its queries once, then walks the keys in blocks of
BLOCK_T, keeping per query the running max m, the running sum l of exp(s - m) and the
unnormalised output acc, rescaled by exp(m_old - m_new) whenever the max grows. The family's
50, 145 or 197 tokens are not multiples of any block: keys past T score -inf, queries past Q
are computed and not stored. Head dims that are not powers of two (9 in the odd-size test
config) are padded with zeros in registers, which change no dot product.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .runtime import block, dot_precision, interpreting, tuned

CONFIGS = [triton.Config({"BLOCK_Q": q, "BLOCK_T": t}, num_warps=w, num_stages=s)
           for q, t, w, s in [(16, 64, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (64, 32, 4, 3),
                              (128, 64, 8, 2)]]


@tuned(CONFIGS, key=["T", "Q", "HD"])
@triton.jit
def attention_kernel(qkv_ptr, out_ptr, T, Q, H, HD, D, stride_b, stride_t, stride_ob, stride_oq,
                     scale, DOT_PRECISION: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_Q: tl.constexpr, BLOCK_T: tl.constexpr):
    pid_q = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rq = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    rd = tl.arange(0, BLOCK_D)
    in_d = rd < HD
    base = qkv_ptr + b * stride_b + h * HD
    q = tl.load(base + rq[:, None] * stride_t + rd[None, :],
                mask=(rq < Q)[:, None] & in_d[None, :], other=0.0)

    m = tl.full((BLOCK_Q,), float("-inf"), dtype=tl.float32)
    l = tl.zeros((BLOCK_Q,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        rt = t0 + tl.arange(0, BLOCK_T)
        in_t = rt < T
        k_t = tl.load(base + D + rt[None, :] * stride_t + rd[:, None],         # (BLOCK_D, BLOCK_T)
                      mask=in_d[:, None] & in_t[None, :], other=0.0)
        s = tl.dot(q, k_t, input_precision=DOT_PRECISION) * scale              # (BLOCK_Q, BLOCK_T)
        s = tl.where(in_t[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        rescale = tl.exp(m - m_new)
        p = tl.exp(s - m_new[:, None])
        l = l * rescale + tl.sum(p, axis=1)
        v = tl.load(base + 2 * D + rt[:, None] * stride_t + rd[None, :],      # (BLOCK_T, BLOCK_D)
                    mask=in_t[:, None] & in_d[None, :], other=0.0)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m = m_new
    out = acc / l[:, None]
    tl.store(out_ptr + b * stride_ob + rq[:, None] * stride_oq + h * HD + rd[None, :],
             out.to(out_ptr.dtype.element_ty), mask=(rq < Q)[:, None] & in_d[None, :])


def attention(qkv: torch.Tensor, num_heads: int, queries: int | None = None,
              tf32: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """qkv (B, T, 3D) contiguous -> (B, Q, D) in qkv's dtype, Q = queries or T, written to out
    when given."""
    b, t, three_d = qkv.shape
    d = three_d // 3
    hd = d // num_heads
    q = t if queries is None else queries
    if out is None:
        out = torch.empty((b, q, d), dtype=qkv.dtype, device=qkv.device)
    meta = dict(BLOCK_Q=block(q), BLOCK_T=block(t)) if interpreting() else {}
    attention_kernel[lambda meta: (triton.cdiv(q, meta["BLOCK_Q"]), b * num_heads)](
        qkv, out, t, q, num_heads, hd, d, qkv.stride(0), qkv.stride(1), out.stride(0),
        out.stride(1), 1.0 / math.sqrt(hd), DOT_PRECISION=dot_precision(qkv.dtype, tf32),
        BLOCK_D=max(16, triton.next_power_of_2(hd)), **meta)
    return out
