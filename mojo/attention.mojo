# Attention fused per (batch, head): scores, softmax and the weighted sum of V for one query
# row at a time, so the (T, T) score matrix is never written; only one row of T scores lives
# in a per-thread scratch, next to the head's K transposed for vector dot products over keys.
# Both products run up to GROUP independent vector accumulators: one chain of dependent FMAs
# would wait on the FMA latency at every step.

from std.math import exp, sqrt
from std.utils.numerics import neg_inf

from common import F32Ptr, W, F32V, share_begin

comptime GROUP = 4  # vectors per accumulator group


def attention_scratch_floats(t: Int, hd: Int) -> Int:
    """Scratch one thread needs: K^T (hd, TP) and a score row (TP,), TP = T rounded up to W."""
    var tp = (t + W - 1) // W * W
    return hd * tp + tp


@always_inline
def scores[nb: Int](q: F32Ptr, kt: F32Ptr, tp: Int, hd: Int, jb: Int, s: F32Ptr):
    """S[jb : jb + nb * W] = q (hd,) . K^T[:, jb : jb + nb * W] with K^T (hd, TP)."""
    var acc = Array[F32V, nb](fill=F32V(0))
    for e in range(hd):
        var qe = F32V(q[unsafe_offset=e])
        var row = kt.unsafe_offset(e * tp + jb)
        comptime for u in range(nb):
            acc[u] = qe.fma(row.unsafe_load[width=W](u * W), acc[u])
    comptime for u in range(nb):
        s.unsafe_store(jb + u * W, acc[u])


@always_inline
def weighted_sum[nb: Int](p: F32Ptr, v: F32Ptr, ld: Int, t: Int, e0: Int, inv: Float32,
                          o: F32Ptr):
    """O[e0 : e0 + nb * W] = inv * sum_j p_j V[j, e0 : e0 + nb * W], V rows ld apart."""
    var acc = Array[F32V, nb](fill=F32V(0))
    for j in range(t):
        var pj = F32V(p[unsafe_offset=j])
        var row = v.unsafe_offset(j * ld + e0)
        comptime for u in range(nb):
            acc[u] = pj.fma(row.unsafe_load[width=W](u * W), acc[u])
    comptime for u in range(nb):
        o.unsafe_store(e0 + u * W, acc[u] * inv)


def attention(qkv: F32Ptr, y: F32Ptr, scratch: F32Ptr, b: Int, t: Int, d: Int, heads: Int,
              tid: Int, nthreads: Int):
    """Attention of qkv (B, T, 3D) packed q|k|v into y (B, T, D); this thread's (batch, head) pairs."""
    var hd = d // heads
    var tp = (t + W - 1) // W * W
    var kt = scratch                        # (hd, TP): K^T of one head, scaled, zero past T
    var s = scratch.unsafe_offset(hd * tp)  # (TP,): one row of scores, then probabilities
    var scale = 1.0 / sqrt(Float32(hd))
    var ld = 3 * d
    for item in range(share_begin(b * heads, tid, nthreads),
                      share_begin(b * heads, tid + 1, nthreads)):
        var bi = item // heads
        var h = item % heads
        var base = qkv.unsafe_offset(bi * t * ld)
        var q = base.unsafe_offset(h * hd)
        var k = base.unsafe_offset(d + h * hd)
        var v = base.unsafe_offset(2 * d + h * hd)
        # the scale folds into K^T once per head instead of into every score
        for e in range(hd):
            var row = kt.unsafe_offset(e * tp)
            for j in range(t):
                row[unsafe_offset=j] = k[unsafe_offset=j * ld + e] * scale
            for j in range(t, tp):
                row[unsafe_offset=j] = 0
        for i in range(t):
            var qi = q.unsafe_offset(i * ld)
            var jb = 0
            while jb + GROUP * W <= tp:
                scores[GROUP](qi, kt, tp, hd, jb, s)
                jb += GROUP * W
            comptime for nb in range(1, GROUP):
                if tp - jb == nb * W:
                    scores[nb](qi, kt, tp, hd, jb, s)
            # stable softmax over the T valid scores; the padding scores -inf and weighs 0
            for j in range(t, tp):
                s[unsafe_offset=j] = neg_inf[DType.float32]()
            var mx = F32V(neg_inf[DType.float32]())
            for j in range(0, tp, W):
                mx = max(mx, s.unsafe_load[width=W](j))
            var m = mx.reduce_max()
            var total = F32V(0)
            for j in range(0, tp, W):
                var p = exp(s.unsafe_load[width=W](j) - m)
                s.unsafe_store(j, p)
                total += p
            var inv = 1.0 / total.reduce_add()
            # y row = sum_j p_j v_j / sum_j p_j
            var o = y.unsafe_offset((bi * t + i) * d + h * hd)
            var e = 0
            while e + GROUP * W <= hd:
                weighted_sum[GROUP](s, v, ld, t, e, inv, o)
                e += GROUP * W
            comptime for nb in range(1, GROUP):
                if (hd - e) // W == nb:
                    weighted_sum[nb](s, v, ld, t, e, inv, o)
            e += (hd - e) // W * W
            while e < hd:
                var acc: Float32 = 0
                for j in range(t):
                    acc += s[unsafe_offset=j] * v[unsafe_offset=j * ld + e]
                o[unsafe_offset=e] = acc * inv
                e += 1
