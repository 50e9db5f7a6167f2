# Packed GEMM with fused epilogues: C (M, N) = epilogue(A (M, K) @ W^T + bias).
#
# W (N, K) is packed once at load into panels of NR columns, Bp (NP, K, NR) with
# Bp[p, k, j] = W[p * NR + j, k] (zero past N), and bias is padded to NP * NR, so the register
# tile below reads both with whole-vector loads. Threads split the panels: every ViT GEMM has
# at least NR * threads columns, and small-M GEMMs (batch 1: 50 rows) stay parallel.

from common import F32Ptr, W, F32V, share_begin
from gelu_erf import gelu_erf
from gelu_tanh import gelu_tanh

comptime MR = 6      # rows of the register tile: 2 * MR accumulators + 2 B vectors + 1 A broadcast
comptime NR = 2 * W  # columns of the register tile, the panel width

# Epilogues, applied to acc + bias before the one store of each output vector
comptime EPI_BIAS = 0
comptime EPI_GELU_ERF = 1
comptime EPI_GELU_TANH = 2
comptime EPI_RESIDUAL = 3  # + R (M, N); R may be C itself (x += proj(...))

# rows of A kept hot per pass over this thread's panels: about 128 KiB of A
comptime A_BLOCK_BYTES = 128 * 1024


@always_inline
def epilogue[epi: Int, width: Int](v: SIMD[DType.float32, width],
                                   r: F32Ptr) -> SIMD[DType.float32, width]:
    comptime if epi == EPI_GELU_ERF:
        return gelu_erf(v)
    elif epi == EPI_GELU_TANH:
        return gelu_tanh(v)
    elif epi == EPI_RESIDUAL:
        return v + r.unsafe_load[width=width](0)
    else:
        return v


# ---- the register tile -----------------------------------------------------------------------


@always_inline
def tile[mr: Int, epi: Int](a: F32Ptr, lda: Int, panel: F32Ptr, k: Int, bias: F32Ptr,
                            c: F32Ptr, ldc: Int, r: F32Ptr, ldr: Int, nv: Int):
    """C[0:mr, 0:nv] of one panel: a (mr, K) rows of A, panel (K, NR), bias (NR,)."""
    var acc = Array[F32V, 2 * mr](fill=F32V(0))
    for kk in range(k):
        var b0 = panel.unsafe_load[width=W](kk * NR)
        var b1 = panel.unsafe_load[width=W](kk * NR + W)
        comptime for i in range(mr):
            var av = F32V(a[unsafe_offset=i * lda + kk])
            acc[2 * i] = av.fma(b0, acc[2 * i])
            acc[2 * i + 1] = av.fma(b1, acc[2 * i + 1])
    var bias0 = bias.unsafe_load[width=W](0)
    var bias1 = bias.unsafe_load[width=W](W)
    if nv == NR:
        comptime for i in range(mr):
            var row = c.unsafe_offset(i * ldc)
            var res = r.unsafe_offset(i * ldr)
            row.unsafe_store(0, epilogue[epi, W](acc[2 * i] + bias0, res))
            row.unsafe_store(W, epilogue[epi, W](acc[2 * i + 1] + bias1, res.unsafe_offset(W)))
    else:
        # the last panel of an N that is not a multiple of NR: store the valid columns only
        comptime for i in range(mr):
            for j in range(nv):
                var v: Float32
                if j < W:
                    v = acc[2 * i][j] + bias0[j]
                else:
                    v = acc[2 * i + 1][j - W] + bias1[j - W]
                var o = epilogue[epi, 1](v, r.unsafe_offset(i * ldr + j))
                c.unsafe_store(i * ldc + j, o)


# ---- the driver ------------------------------------------------------------------------------


def gemm[epi: Int](a: F32Ptr, lda: Int, bp: F32Ptr, bias: F32Ptr, c: F32Ptr, ldc: Int,
                   r: F32Ptr, ldr: Int, m: Int, n: Int, k: Int, tid: Int, nthreads: Int):
    """This thread's panels of C (M, N), row strides lda, ldc, ldr; bp (NP, K, NR), bias (NP*NR,)."""
    var npanels = (n + NR - 1) // NR
    var p0 = share_begin(npanels, tid, nthreads)
    var p1 = share_begin(npanels, tid + 1, nthreads)
    var mc = max(MR, A_BLOCK_BYTES // (4 * k) // MR * MR)
    var m0 = 0
    while m0 < m:
        var m1 = min(m0 + mc, m)
        for p in range(p0, p1):
            var n0 = p * NR
            var nv = min(NR, n - n0)
            var panel = bp.unsafe_offset(p * k * NR)
            var pbias = bias.unsafe_offset(n0)
            var i = m0
            while i + MR <= m1:
                tile[MR, epi](a.unsafe_offset(i * lda), lda, panel, k, pbias,
                              c.unsafe_offset(i * ldc + n0), ldc,
                              r.unsafe_offset(i * ldr + n0), ldr, nv)
                i += MR
            var rest = m1 - i
            comptime for mr in range(1, MR):
                if rest == mr:
                    tile[mr, epi](a.unsafe_offset(i * lda), lda, panel, k, pbias,
                                  c.unsafe_offset(i * ldc + n0), ldc,
                                  r.unsafe_offset(i * ldr + n0), ldr, nv)
        m0 = m1


def gemm_any(epi: Int, a: F32Ptr, lda: Int, bp: F32Ptr, bias: F32Ptr, c: F32Ptr, ldc: Int,
             r: F32Ptr, ldr: Int, m: Int, n: Int, k: Int, tid: Int, nthreads: Int):
    """gemm with the epilogue chosen at run time (one of the EPI_* values)."""
    if epi == EPI_GELU_ERF:
        gemm[EPI_GELU_ERF](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    elif epi == EPI_GELU_TANH:
        gemm[EPI_GELU_TANH](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    elif epi == EPI_RESIDUAL:
        gemm[EPI_RESIDUAL](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    else:
        gemm[EPI_BIAS](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
