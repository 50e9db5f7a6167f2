# The linear op: a packed GEMM with fused epilogues, C (M, N) = epilogue(A (M, K) @ W^T + bias).
#
# W (N, K) is packed once at load into panels of NR columns, Bp (NP, K, NR) with
# Bp[p, k, j] = W[p * NR + j, k] (zero past N), and bias is padded to NP * NR, so the register
# tile below reads both with whole-vector loads. Threads split the panels (8 to 32 per GEMM of
# ViT-S with AVX-512), so small-M GEMMs (batch 1: 50 rows) keep every thread busy too.

from bias_gelu import gelu_erf, gelu_tanh
from common import F32Ptr, W, F32V, share_begin
from model_layout import EPI_NONE, EPI_GELU_ERF, EPI_GELU_TANH, EPI_RESIDUAL

# The register tile: MR rows x NV vectors of accumulators (18), plus NV B vectors and one A
# broadcast, fits the 32 vector registers of AVX-512; per step of K it loads 0.5 vectors per
# FMA (6 x 32 tiles: 0.67), measured 2-3% faster end to end.
comptime MR = 6
comptime NV = 3
comptime NR = NV * W  # columns of the register tile, the panel width

# rows of A kept hot per pass over this thread's panels: about 128 KiB of A
comptime A_BLOCK_BYTES = 128 * 1024


# The epilogues (EPI_*, numbered by Python's LINEAR_EPILOGUES) apply to acc + bias before the
# one store of each output vector; EPI_RESIDUAL adds R (M, N), which may be C itself.
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
    var acc = Array[F32V, NV * mr](fill=F32V(0))
    for kk in range(k):
        var bv = Array[F32V, NV](fill=F32V(0))
        comptime for u in range(NV):
            bv[u] = panel.unsafe_load[width=W](kk * NR + u * W)
        comptime for i in range(mr):
            var av = F32V(a[unsafe_offset=i * lda + kk])
            comptime for u in range(NV):
                acc[NV * i + u] = av.fma(bv[u], acc[NV * i + u])
    if nv == NR:
        comptime for i in range(mr):
            var row = c.unsafe_offset(i * ldc)
            var res = r.unsafe_offset(i * ldr)
            comptime for u in range(NV):
                var v = acc[NV * i + u] + bias.unsafe_load[width=W](u * W)
                row.unsafe_store(u * W, epilogue[epi, W](v, res.unsafe_offset(u * W)))
    else:
        # the last panel of an N that is not a multiple of NR: store the valid columns only
        comptime for i in range(mr):
            for j in range(nv):
                var v = acc[NV * i + j // W][j % W] + bias[unsafe_offset=j]
                c.unsafe_store(i * ldc + j, epilogue[epi, 1](v, r.unsafe_offset(i * ldr + j)))


# ---- the driver ------------------------------------------------------------------------------


def linear[epi: Int](a: F32Ptr, lda: Int, bp: F32Ptr, bias: F32Ptr, c: F32Ptr, ldc: Int,
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


def linear_any(epi: Int, a: F32Ptr, lda: Int, bp: F32Ptr, bias: F32Ptr, c: F32Ptr, ldc: Int,
             r: F32Ptr, ldr: Int, m: Int, n: Int, k: Int, tid: Int, nthreads: Int):
    """linear with the epilogue chosen at run time (one of the EPI_* values)."""
    if epi == EPI_GELU_ERF:
        linear[EPI_GELU_ERF](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    elif epi == EPI_GELU_TANH:
        linear[EPI_GELU_TANH](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    elif epi == EPI_RESIDUAL:
        linear[EPI_RESIDUAL](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
    else:
        linear[EPI_NONE](a, lda, bp, bias, c, ldc, r, ldr, m, n, k, tid, nthreads)
