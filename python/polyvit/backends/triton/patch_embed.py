"""Patch embedding as an implicit GEMM: out[b, n] = patch(b, n) @ weight.T + bias, where the
im2col is index arithmetic in the A-operand load, never a materialised (B*N, C*P*P) matrix.

Row m of the GEMM is patch n = m mod N of image b = m div N, at grid cell (gy, gx); column k is
pixel (c, py, px) of the patch, in the weight's (D, C, P, P) order. The address of element
(m, k) separates into row_base[m] + col_offset[k]:
    row_base   = b*C*H*W + gy*P*W + gx*P
    col_offset = c*H*W + py*W + px
so each tile is an outer sum of two index vectors.

NORM_PRE (the LayerNorm over each flattened patch that some checkpoints apply before the
projection) is fused too: two passes over the patch's pixels compute its mean and variance in
fp32, then the GEMM loop normalises each tile as it loads it. The epilogue adds the bias and,
with ADD_POS, the position embedding of token n + 1, and stores row n at token out_row0 + n of
its image: the forward writes the patches straight into the (B, T, D) token buffer after the
class token.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .runtime import block, dot_precision, interpreting, tuned

CONFIGS = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
           for bm, bn, bk, w, s in [(64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3),
                                    (32, 64, 64, 4, 3), (128, 128, 32, 8, 3)]]


@triton.jit
def _patch_pixels(img_ptr, row_base, in_m, k0, K, PP, P, HW, W,
                  BLOCK_K: tl.constexpr):
    """The (BLOCK_M, BLOCK_K) tile of patch pixels at columns k0 .. k0 + BLOCK_K, fp32, and
    its column mask."""
    rk = k0 + tl.arange(0, BLOCK_K)
    in_k = rk < K
    c = rk // PP
    r = rk % PP
    col_offset = c * HW + (r // P) * W + r % P
    x = tl.load(img_ptr + row_base[:, None] + col_offset[None, :],
                mask=in_m[:, None] & in_k[None, :], other=0.0)
    return x.to(tl.float32), in_k


@tuned(CONFIGS, key=["M", "N", "K"])
@triton.jit
def patch_embed_kernel(img_ptr, w_ptr, bias_ptr, pos_ptr, ng_ptr, nb_ptr, out_ptr,
                       M, N, K, NP, GW, P, CHW, HW, W, stride_ob, out_row0, eps,
                       NORM_PRE: tl.constexpr, ADD_POS: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_m = rm < M
    in_n = rn < N
    image = rm // NP
    patch = rm % NP
    row_base = image * CHW + (patch // GW) * P * W + (patch % GW) * P
    PP = P * P

    if NORM_PRE:
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            x, in_k = _patch_pixels(img_ptr, row_base, in_m, k0, K, PP, P, HW, W, BLOCK_K)
            total += tl.sum(x, axis=1)
        mean = total / K
        squares = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            x, in_k = _patch_pixels(img_ptr, row_base, in_m, k0, K, PP, P, HW, W, BLOCK_K)
            centred = tl.where(in_k[None, :], x - mean[:, None], 0.0)
            squares += tl.sum(centred * centred, axis=1)
        std = tl.sqrt_rn(squares / K + eps)

    rk = tl.arange(0, BLOCK_K)
    w_tile = w_ptr + rn[None, :] * K + rk[:, None]                      # (BLOCK_K, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x, in_k = _patch_pixels(img_ptr, row_base, in_m, k0, K, PP, P, HW, W, BLOCK_K)
        if NORM_PRE:
            g = tl.load(ng_ptr + k0 + rk, mask=in_k, other=0.0)
            beta = tl.load(nb_ptr + k0 + rk, mask=in_k, other=0.0)
            x = tl.where(in_k[None, :], (x - mean[:, None]) / std[:, None] * g[None, :]
                         + beta[None, :], 0.0)
        w = tl.load(w_tile, mask=in_k[:, None] & in_n[None, :], other=0.0)
        acc = tl.dot(x.to(w.dtype), w, acc, input_precision=DOT_PRECISION)
        w_tile += BLOCK_K

    acc += tl.load(bias_ptr + rn, mask=in_n, other=0.0)[None, :]
    mask = in_m[:, None] & in_n[None, :]
    if ADD_POS:
        acc += tl.load(pos_ptr + (patch[:, None] + 1) * N + rn[None, :], mask=mask, other=0.0)
    out_rows = image * stride_ob + (patch + out_row0) * N
    tl.store(out_ptr + out_rows[:, None] + rn[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=mask)


def patch_embed(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch: int,
                out: torch.Tensor | None = None, out_row0: int = 0,
                pos: torch.Tensor | None = None, norm_pre: tuple | None = None,
                tf32: bool = False) -> torch.Tensor:
    """images (B, C, H, W) fp32 contiguous, weight (D, C*P*P) contiguous in the compute dtype,
    bias (D,) fp32, P = patch. Writes patch n of image b to
    out[b, out_row0 + n] (out (B, rows, D) fp32, rows >= out_row0 + N; default a new
    (B, N, D)); pos (T, D): add pos[n + 1]; norm_pre (weight, bias, eps): LayerNorm each patch
    first. Returns out."""
    b, c, h, w = images.shape
    d, k = weight.shape
    p = patch
    n_patches = (h // p) * (w // p)
    if out is None:
        out = torch.empty((b, n_patches, d), dtype=torch.float32, device=images.device)
    m = b * n_patches
    meta = dict(BLOCK_M=block(m), BLOCK_N=block(d), BLOCK_K=block(k)) if interpreting() else {}
    ng, nb, eps = norm_pre if norm_pre is not None else (bias, bias, 0.0)
    patch_embed_kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]),
                                     triton.cdiv(d, meta["BLOCK_N"]))](
        images, weight, bias, pos if pos is not None else bias, ng, nb, out,
        m, d, k, n_patches, w // p, p, c * h * w, h * w, w, out.stride(0), out_row0, eps,
        NORM_PRE=norm_pre is not None, ADD_POS=pos is not None,
        DOT_PRECISION=dot_precision(weight.dtype, tf32), **meta)
    return out
