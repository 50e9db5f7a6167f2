# Attention fused per (batch, head): scores, softmax and the weighted sum of V for a block of
# QROWS query rows at a time, so the (T, T) score matrix is never written; only QROWS rows of
# scores live in a per-thread scratch, next to the head's K transposed (and scaled) for vector
# dot products over keys. Both products keep QROWS x GROUP vector accumulators: each K or V
# vector loaded serves QROWS rows, and the FMA chains are independent.

from std.math import exp, sqrt
from std.utils.numerics import neg_inf

from common import F32Ptr, W, F32V, share_begin

comptime QROWS = 4  # query rows per block
comptime GROUP = 4  # vectors of keys (scores) or of head dims (weighted sum) per block


def attention_scratch_floats(t: Int, hd: Int) -> Int:
    """Scratch one thread needs: K^T (hd, TP) and QROWS score rows (QROWS, TP), TP = T rounded
    up to W."""
    var tp = (t + W - 1) // W * W
    return hd * tp + QROWS * tp


@always_inline
def scores[r: Int, nb: Int](q: F32Ptr, ld: Int, kt: F32Ptr, tp: Int, hd: Int, jb: Int,
                            s: F32Ptr):
    """S[0:r, jb : jb + nb * W] = Q[0:r] K^T[:, jb : jb + nb * W]; Q rows ld apart, K^T (hd, TP),
    S rows TP apart."""
    var acc = Array[F32V, r * nb](fill=F32V(0))
    for e in range(hd):
        var qe = Array[F32V, r](fill=F32V(0))
        comptime for i in range(r):
            qe[i] = F32V(q[unsafe_offset=i * ld + e])
        var row = kt.unsafe_offset(e * tp + jb)
        comptime for u in range(nb):
            var kv = row.unsafe_load[width=W](u * W)
            comptime for i in range(r):
                acc[i * nb + u] = qe[i].fma(kv, acc[i * nb + u])
    comptime for i in range(r):
        comptime for u in range(nb):
            s.unsafe_store(i * tp + jb + u * W, acc[i * nb + u])


@always_inline
def weighted_sum[r: Int, nb: Int](p: F32Ptr, tp: Int, v: F32Ptr, ld: Int, t: Int, e0: Int,
                                  o: F32Ptr, ldo: Int):
    """O[0:r, e0 : e0 + nb * W] = P[0:r, 0:T] V[0:T, e0 : e0 + nb * W]; P rows TP apart, V rows
    ld apart, O rows ldo apart."""
    var acc = Array[F32V, r * nb](fill=F32V(0))
    for j in range(t):
        var pj = Array[F32V, r](fill=F32V(0))
        comptime for i in range(r):
            pj[i] = F32V(p[unsafe_offset=i * tp + j])
        var row = v.unsafe_offset(j * ld + e0)
        comptime for u in range(nb):
            var vv = row.unsafe_load[width=W](u * W)
            comptime for i in range(r):
                acc[i * nb + u] = pj[i].fma(vv, acc[i * nb + u])
    comptime for i in range(r):
        comptime for u in range(nb):
            o.unsafe_store(i * ldo + e0 + u * W, acc[i * nb + u])


@always_inline
def softmax_row(s: F32Ptr, t: Int, tp: Int):
    """Stable softmax over s[0:T] in place; the padding s[T:TP] scores -inf and weighs 0."""
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
    for j in range(0, tp, W):
        s.unsafe_store(j, s.unsafe_load[width=W](j) * inv)


@always_inline
def query_block[r: Int](q: F32Ptr, kt: F32Ptr, v: F32Ptr, s: F32Ptr, o: F32Ptr, ld: Int,
                        ldo: Int, t: Int, tp: Int, hd: Int):
    """Rows 0:r of one head's output O (rows ldo apart) for query rows Q[0:r] (rows ld apart)."""
    var jb = 0
    while jb + GROUP * W <= tp:
        scores[r, GROUP](q, ld, kt, tp, hd, jb, s)
        jb += GROUP * W
    comptime for nb in range(1, GROUP):
        if tp - jb == nb * W:
            scores[r, nb](q, ld, kt, tp, hd, jb, s)
    for i in range(r):
        softmax_row(s.unsafe_offset(i * tp), t, tp)
    var e = 0
    while e + GROUP * W <= hd:
        weighted_sum[r, GROUP](s, tp, v, ld, t, e, o, ldo)
        e += GROUP * W
    comptime for nb in range(1, GROUP):
        if (hd - e) // W == nb:
            weighted_sum[r, nb](s, tp, v, ld, t, e, o, ldo)
    e += (hd - e) // W * W
    for i in range(r):  # head dims past the last whole vector
        for ee in range(e, hd):
            var acc: Float32 = 0
            for j in range(t):
                acc += s[unsafe_offset=i * tp + j] * v[unsafe_offset=j * ld + ee]
            o[unsafe_offset=i * ldo + ee] = acc


def attention(qkv: F32Ptr, y: F32Ptr, scratch: F32Ptr, b: Int, t: Int, d: Int, heads: Int,
              q_rows: Int, tid: Int, nthreads: Int):
    """Attention of qkv (B, T, 3D) packed q|k|v into y (B, T, D) for the first q_rows queries of
    each image (T, or 1: the class token); this thread's (batch, head) pairs."""
    var hd = d // heads
    var tp = (t + W - 1) // W * W
    var kt = scratch                        # (hd, TP): K^T of one head, scaled, zero past T
    var s = scratch.unsafe_offset(hd * tp)  # (QROWS, TP): scores, then probabilities
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
        var o = y.unsafe_offset(bi * t * d + h * hd)
        # the scale folds into K^T once per head instead of into every score
        for e in range(hd):
            var row = kt.unsafe_offset(e * tp)
            for j in range(t):
                row[unsafe_offset=j] = k[unsafe_offset=j * ld + e] * scale
            for j in range(t, tp):
                row[unsafe_offset=j] = 0
        var i = 0
        while i + QROWS <= q_rows:
            query_block[QROWS](q.unsafe_offset(i * ld), kt, v, s, o.unsafe_offset(i * d), ld,
                               d, t, tp, hd)
            i += QROWS
        comptime for r in range(1, QROWS):
            if q_rows - i == r:
                query_block[r](q.unsafe_offset(i * ld), kt, v, s, o.unsafe_offset(i * d), ld, d,
                               t, tp, hd)
