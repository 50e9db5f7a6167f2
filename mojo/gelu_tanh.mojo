# The tanh approximation of GELU (the original JAX ViT's default):
# 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). GEMM epilogue and standalone bias + GELU.

from std.math import tanh

from common import F32Ptr, W, share_begin

comptime SQRT_2_OVER_PI: Float32 = 0.7978845608028654


@always_inline
def gelu_tanh[width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


# ----------------------------------------------------------------------------------------------


def bias_gelu_tanh(x: F32Ptr, bias: F32Ptr, y: F32Ptr, m: Int, n: Int, tid: Int,
                   nthreads: Int):
    """y = gelu_tanh(x + bias) for x, y (M, N) and bias (N,); this thread's share of rows."""
    for i in range(share_begin(m, tid, nthreads), share_begin(m, tid + 1, nthreads)):
        var row = i * n
        var j = 0
        while j + W <= n:
            var v = x.unsafe_load[width=W](row + j) + bias.unsafe_load[width=W](j)
            y.unsafe_store(row + j, gelu_tanh(v))
            j += W
        while j < n:
            var v = x.unsafe_load[width=1](row + j) + bias.unsafe_load[width=1](j)
            y.unsafe_store(row + j, gelu_tanh[1](v))
            j += 1
