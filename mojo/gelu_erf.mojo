# Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): the GEMM epilogue and the standalone
# bias + GELU op.

from std.math import erf

from common import F32Ptr, W, share_begin

comptime INV_SQRT2: Float32 = 0.7071067811865476


@always_inline
def gelu_erf[width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    return 0.5 * x * (1.0 + erf(x * INV_SQRT2))


# ----------------------------------------------------------------------------------------------


def bias_gelu_erf(x: F32Ptr, bias: F32Ptr, y: F32Ptr, m: Int, n: Int, tid: Int,
                  nthreads: Int):
    """y = gelu_erf(x + bias) for x, y (M, N) and bias (N,); this thread's share of rows."""
    for i in range(share_begin(m, tid, nthreads), share_begin(m, tid + 1, nthreads)):
        var row = i * n
        var j = 0
        while j + W <= n:
            var v = x.unsafe_load[width=W](row + j) + bias.unsafe_load[width=W](j)
            y.unsafe_store(row + j, gelu_erf(v))
            j += W
        while j < n:
            var v = x.unsafe_load[width=1](row + j) + bias.unsafe_load[width=1](j)
            y.unsafe_store(row + j, gelu_erf[1](v))
            j += 1
