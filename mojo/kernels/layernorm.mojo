# LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b, biased variance.
# Two passes over the row (mean, then squared deviations): a one-pass sum of squares cancels
# badly when the mean is large against the spread.

from std.math import sqrt

from common import F32Ptr, W, F32V, share_begin


@always_inline
def layernorm_row(x: F32Ptr, w: F32Ptr, b: F32Ptr, y: F32Ptr, c: Int, eps: Float32):
    """y (C,) = LayerNorm(x (C,)) with weight w (C,) and bias b (C,); y may be x."""
    var acc = F32V(0)
    var j = 0
    while j + W <= c:
        acc += x.unsafe_load[width=W](j)
        j += W
    var total = acc.reduce_add()
    while j < c:
        total += x[unsafe_offset=j]
        j += 1
    var mean = total / Float32(c)

    var dev = F32V(0)
    j = 0
    while j + W <= c:
        var d = x.unsafe_load[width=W](j) - mean
        dev = d.fma(d, dev)
        j += W
    var sq = dev.reduce_add()
    while j < c:
        var d = x[unsafe_offset=j] - mean
        sq += d * d
        j += 1
    var rstd = 1.0 / sqrt(sq / Float32(c) + eps)

    j = 0
    while j + W <= c:
        var z = (x.unsafe_load[width=W](j) - mean) * rstd
        y.unsafe_store(j, z.fma(w.unsafe_load[width=W](j), b.unsafe_load[width=W](j)))
        j += W
    while j < c:
        var z = (x[unsafe_offset=j] - mean) * rstd
        y[unsafe_offset=j] = z * w[unsafe_offset=j] + b[unsafe_offset=j]
        j += 1


def layernorm(x: F32Ptr, ldx: Int, w: F32Ptr, b: F32Ptr, y: F32Ptr, ldo: Int, m: Int,
              c: Int, eps: Float32, tid: Int, nthreads: Int):
    """This thread's rows of y (M, C) = LayerNorm(x (M, C)); row strides ldx, ldo."""
    for i in range(share_begin(m, tid, nthreads), share_begin(m, tid + 1, nthreads)):
        layernorm_row(x.unsafe_offset(i * ldx), w, b, y.unsafe_offset(i * ldo), c, eps)
