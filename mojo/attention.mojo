# Attention fused per (batch, head): scores, softmax and the weighted sum of V for one query
# row at a time, so the (T, T) score matrix is never written; only one row of T scores lives
# in a per-thread scratch, next to the head's K transposed for vector dot products over keys.

from std.math import exp, sqrt

from common import F32Ptr, W, F32V, share_begin


def attention_scratch_floats(t: Int, hd: Int) -> Int:
    """Scratch one thread needs: K^T (hd, TP) and a score row (TP,), TP = T rounded up to W."""
    var tp = (t + W - 1) // W * W
    return hd * tp + tp


def attention(qkv: F32Ptr, y: F32Ptr, scratch: F32Ptr, b: Int, t: Int, d: Int, heads: Int,
              tid: Int, nthreads: Int):
    """qkv (B, T, 3D) packed q|k|v -> y (B, T, D); this thread's (batch, head) pairs."""
    var hd = d // heads
    var tp = (t + W - 1) // W * W
    var kt = scratch                      # (hd, TP): K^T of one head, zero past T
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
        for e in range(hd):
            var row = kt.unsafe_offset(e * tp)
            for j in range(t):
                row[unsafe_offset=j] = k[unsafe_offset=j * ld + e]
            for j in range(t, tp):
                row[unsafe_offset=j] = 0
        for i in range(t):
            var qi = q.unsafe_offset(i * ld)
            # scores of query i against every key, W keys per vector
            var jb = 0
            while jb < tp:
                var acc = F32V(0)
                for e in range(hd):
                    acc = F32V(qi[unsafe_offset=e] * scale).fma(
                        kt.unsafe_load[width=W](e * tp + jb), acc)
                s.unsafe_store(jb, acc)
                jb += W
            # stable softmax over the T valid scores
            var mx = s[unsafe_offset=0]
            for j in range(1, t):
                mx = max(mx, s[unsafe_offset=j])
            var total: Float32 = 0
            for j in range(t):
                var p = exp(s[unsafe_offset=j] - mx)
                s[unsafe_offset=j] = p
                total += p
            var inv = 1.0 / total
            # out row = sum_j p_j v_j / total
            var o = y.unsafe_offset((bi * t + i) * d + h * hd)
            var e = 0
            while e + W <= hd:
                var acc = F32V(0)
                for j in range(t):
                    acc = F32V(s[unsafe_offset=j]).fma(v.unsafe_load[width=W](j * ld + e), acc)
                o.unsafe_store(e, acc * inv)
                e += W
            while e < hd:
                var acc: Float32 = 0
                for j in range(t):
                    acc += s[unsafe_offset=j] * v[unsafe_offset=j * ld + e]
                o[unsafe_offset=e] = acc * inv
                e += 1
