# Patch embedding as im2col + the linear op (linear.mojo): the im2col rows, with the optional
# LayerNorm over each flattened patch (patch_norm_pre), then the projection; and the token rows
# that follow it in the forward: class token, optional LayerNorm of each embedding
# (patch_norm_post), position.

from barrier import barrier
from common import F32Ptr, I64Ptr, W, share_begin
from layernorm import layernorm_row
from linear import linear
from model_layout import EPI_NONE


def im2col(images: F32Ptr, patches: F32Ptr, b: Int, c: Int, h: Int, w: Int, p: Int,
           norm_w: F32Ptr, norm_b: F32Ptr, norm: Bool, eps: Float32, tid: Int, nthreads: Int):
    """images (B, C, H, W) -> patches (B * N, C * P * P), N = (H / P) (W / P), each row in
    (c, ph, pw) order."""
    var gw = w // p
    var n = (h // p) * gw
    var cpp = c * p * p
    for row in range(share_begin(b * n, tid, nthreads), share_begin(b * n, tid + 1, nthreads)):
        var bi = row // n
        var gy = (row % n) // gw
        var gx = (row % n) % gw
        var dst = patches.unsafe_offset(row * cpp)
        for ch in range(c):
            for ph in range(p):
                var src = images.unsafe_offset(((bi * c + ch) * h + gy * p + ph) * w + gx * p)
                var y = dst.unsafe_offset((ch * p + ph) * p)
                var j = 0
                while j + W <= p:
                    y.unsafe_store(j, src.unsafe_load[width=W](j))
                    j += W
                while j < p:
                    y[unsafe_offset=j] = src[unsafe_offset=j]
                    j += 1
        if norm:
            layernorm_row(dst, norm_w, norm_b, dst, cpp, eps)


def patch_embed(images: F32Ptr, patches: F32Ptr, weight: F32Ptr, bias: F32Ptr, y: F32Ptr,
                b: Int, c: Int, h: Int, w: Int, p: Int, d: Int, norm_w: F32Ptr, norm_b: F32Ptr,
                norm: Bool, eps: Float32, state: I64Ptr, tid: Int, nthreads: Int):
    """y (B * N, D) = norm?(im2col(images (B, C, H, W))) @ W^T + bias, W packed
    (NP(D), C * P * P, NR), bias (NP(D) * NR,); patches (B * N, C * P * P) is scratch. Every
    thread of the team calls it: they meet at a barrier (state) between the two steps."""
    im2col(images, patches, b, c, h, w, p, norm_w, norm_b, norm, eps, tid, nthreads)
    barrier(state, nthreads)
    var cpp = c * p * p
    linear[EPI_NONE](patches, cpp, weight, bias, y, d, y, d, b * (h // p) * (w // p), d, cpp,
                     tid, nthreads)


def embed_tokens(emb: F32Ptr, cls: F32Ptr, pos: F32Ptr, x: F32Ptr, b: Int, n: Int, d: Int,
                 norm_w: F32Ptr, norm_b: F32Ptr, norm: Bool, eps: Float32, tid: Int,
                 nthreads: Int):
    """x (B, T, D) = cat(cls (D,), norm?(emb (B * N, D))) + pos (T, D), T = N + 1."""
    var t = n + 1
    for row in range(share_begin(b * t, tid, nthreads), share_begin(b * t, tid + 1, nthreads)):
        var bi = row // t
        var ti = row % t
        var dst = x.unsafe_offset(row * d)
        var src = cls if ti == 0 else emb.unsafe_offset((bi * n + ti - 1) * d)
        if norm and ti > 0:
            layernorm_row(src, norm_w, norm_b, dst, d, eps)
            src = dst
        var pe = pos.unsafe_offset(ti * d)
        var j = 0
        while j + W <= d:
            dst.unsafe_store(j, src.unsafe_load[width=W](j) + pe.unsafe_load[width=W](j))
            j += W
        while j < d:
            dst[unsafe_offset=j] = src[unsafe_offset=j] + pe[unsafe_offset=j]
            j += 1
