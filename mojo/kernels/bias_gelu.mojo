# GELU in its two forms, as GEMM epilogues (linear.mojo) and as the standalone bias + GELU op:
#   erf:  x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))                  (timm, HF, the seed)
#   tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))           (the original JAX ViT)

from std.math import erf, tanh

from common import F32Ptr, W, share_begin
from model_layout import GELU_TANH

comptime INV_SQRT2: Float32 = 0.7071067811865476
comptime SQRT_2_OVER_PI: Float32 = 0.7978845608028654


@always_inline
def gelu_erf[width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    return 0.5 * x * (1.0 + erf(x * INV_SQRT2))


@always_inline
def gelu_tanh[width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


@always_inline
def gelu[form: Int, width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    comptime if form == GELU_TANH:
        return gelu_tanh(x)
    else:
        return gelu_erf(x)


# ----------------------------------------------------------------------------------------------


def bias_gelu[form: Int](x: F32Ptr, bias: F32Ptr, y: F32Ptr, m: Int, n: Int, tid: Int,
                         nthreads: Int):
    """y = gelu(x + bias) for x, y (M, N) and bias (N,); this thread's share of rows."""
    for i in range(share_begin(m, tid, nthreads), share_begin(m, tid + 1, nthreads)):
        var row = i * n
        var j = 0
        while j + W <= n:
            var v = x.unsafe_load[width=W](row + j) + bias.unsafe_load[width=W](j)
            y.unsafe_store(row + j, gelu[form](v))
            j += W
        while j < n:
            var v = x.unsafe_load[width=1](row + j) + bias.unsafe_load[width=1](j)
            y.unsafe_store(row + j, gelu[form, 1](v))
            j += 1
