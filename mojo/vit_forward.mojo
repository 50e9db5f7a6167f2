# The whole ViT forward in one call per thread: the threads of a call run the same op
# sequence on their shares of the work and meet at a barrier between ops, so no Python runs
# (and no GIL is taken) between the ~90 ops of a forward.
#
# Shapes: B batch, N patches, T = N + 1 tokens, D width, H heads, hd = D / H, M MLP width,
# CPP = C * P * P patch length, K classes.

from attention import attention, attention_scratch_floats
from barrier import barrier
from common import F32Ptr, I64Ptr, ptr_at
from gemm import gemm, gemm_any, NR, EPI_BIAS, EPI_GELU_ERF, EPI_GELU_TANH, EPI_RESIDUAL
from layernorm import layernorm
from patch_embed import embed_tokens, im2col

# ---- the config array (int64) that Python fills from ViTConfig ------------------------------

comptime CFG_IMAGE = 0
comptime CFG_PATCH = 1
comptime CFG_CHANS = 2
comptime CFG_DIM = 3
comptime CFG_DEPTH = 4
comptime CFG_HEADS = 5
comptime CFG_MLP = 6
comptime CFG_CLASSES = 7
comptime CFG_NORM_PRE = 8
comptime CFG_NORM_POST = 9
comptime CFG_GELU_TANH = 10
comptime CFG_LEN = 11

# ---- the weight table: (address, float count) int64 pairs, in this order ---------------------

comptime WT_PATCH = 0       # projection packed (NP(D), CPP, NR)
comptime WT_PATCH_B = 1     # (NP(D) * NR,) zero padded, as every packed GEMM's bias below
comptime WT_PRE_W = 2       # (CPP,) patch_norm_pre, empty when off
comptime WT_PRE_B = 3
comptime WT_POST_W = 4      # (D,) patch_norm_post, empty when off
comptime WT_POST_B = 5
comptime WT_CLS = 6         # (D,)
comptime WT_POS = 7         # (T, D)
comptime WT_BLOCKS = 8      # then per block:
comptime BL_NORM1_W = 0     # (D,)
comptime BL_NORM1_B = 1
comptime BL_QKV = 2         # packed (NP(3D), D, NR)
comptime BL_QKV_B = 3       # zeros without qkv bias
comptime BL_PROJ = 4        # packed (NP(D), D, NR)
comptime BL_PROJ_B = 5
comptime BL_NORM2_W = 6
comptime BL_NORM2_B = 7
comptime BL_FC1 = 8         # packed (NP(M), D, NR)
comptime BL_FC1_B = 9
comptime BL_FC2 = 10        # packed (NP(D), M, NR)
comptime BL_FC2_B = 11
comptime BL_LEN = 12
comptime TAIL_NORM_W = 0    # (D,) after the blocks
comptime TAIL_NORM_B = 1
comptime TAIL_HEAD = 2      # packed (NP(K), D, NR)
comptime TAIL_HEAD_B = 3
comptime TAIL_LEN = 4

# a size no buffer reaches: products of dimensions saturate here instead of overflowing
comptime HUGE = 1 << 62


def smul(a: Int, b: Int) -> Int:
    """a * b for non-negative a, b, saturated at HUGE."""
    if a == 0 or b == 0:
        return 0
    if a > HUGE // b:
        return HUGE
    return min(a * b, HUGE)


def packed_floats(n: Int, k: Int) -> Int:
    """Floats of a weight (N, K) packed into panels of NR columns."""
    return smul(smul((n + NR - 1) // NR, NR), k)


def padded_floats(n: Int) -> Int:
    return smul((n + NR - 1) // NR, NR)


@fieldwise_init
struct ViTDims(Copyable):
    var image: Int
    var patch: Int
    var chans: Int
    var d: Int
    var depth: Int
    var heads: Int
    var mlp: Int
    var classes: Int
    var norm_pre: Bool
    var norm_post: Bool
    var gelu_tanh: Bool

    def grid(self) -> Int:
        return self.image // self.patch

    def n(self) -> Int:
        return self.grid() * self.grid()

    def t(self) -> Int:
        return self.n() + 1

    def hd(self) -> Int:
        return self.d // self.heads

    def cpp(self) -> Int:
        return smul(smul(self.chans, self.patch), self.patch)

    def valid(self) -> Bool:
        """Every field within range and consistent (Python checked them too)."""
        comptime LIMIT = 1 << 20
        for v in [self.image, self.patch, self.chans, self.d, self.depth, self.heads, self.mlp,
                  self.classes]:
            if v <= 0 or v > LIMIT:
                return False
        return self.image % self.patch == 0 and self.d % self.heads == 0

    def table_len(self) -> Int:
        return 2 * (WT_BLOCKS + BL_LEN * self.depth + TAIL_LEN)

    def weight_floats(self, entry: Int) -> Int:
        """Float count the weight table's entry must have."""
        if entry == WT_PATCH:
            return packed_floats(self.d, self.cpp())
        if entry == WT_PATCH_B:
            return padded_floats(self.d)
        if entry == WT_PRE_W or entry == WT_PRE_B:
            return self.cpp() if self.norm_pre else 0
        if entry == WT_POST_W or entry == WT_POST_B:
            return self.d if self.norm_post else 0
        if entry == WT_CLS:
            return self.d
        if entry == WT_POS:
            return smul(self.t(), self.d)
        var tail = WT_BLOCKS + BL_LEN * self.depth
        if entry >= tail:
            var which = entry - tail
            if which == TAIL_HEAD:
                return packed_floats(self.classes, self.d)
            if which == TAIL_HEAD_B:
                return padded_floats(self.classes)
            return self.d
        var which = (entry - WT_BLOCKS) % BL_LEN
        if which == BL_QKV:
            return packed_floats(3 * self.d, self.d)
        if which == BL_QKV_B:
            return padded_floats(3 * self.d)
        if which == BL_PROJ:
            return packed_floats(self.d, self.d)
        if which == BL_PROJ_B or which == BL_FC2_B:
            return padded_floats(self.d)
        if which == BL_FC1:
            return packed_floats(self.mlp, self.d)
        if which == BL_FC1_B:
            return padded_floats(self.mlp)
        if which == BL_FC2:
            return packed_floats(self.d, self.mlp)
        return self.d  # the block's LayerNorm weights and biases


def read_dims(cfg: I64Ptr) -> ViTDims:
    return ViTDims(Int(cfg[unsafe_offset=CFG_IMAGE]), Int(cfg[unsafe_offset=CFG_PATCH]),
                   Int(cfg[unsafe_offset=CFG_CHANS]), Int(cfg[unsafe_offset=CFG_DIM]),
                   Int(cfg[unsafe_offset=CFG_DEPTH]), Int(cfg[unsafe_offset=CFG_HEADS]),
                   Int(cfg[unsafe_offset=CFG_MLP]), Int(cfg[unsafe_offset=CFG_CLASSES]),
                   cfg[unsafe_offset=CFG_NORM_PRE] != 0, cfg[unsafe_offset=CFG_NORM_POST] != 0,
                   cfg[unsafe_offset=CFG_GELU_TANH] != 0)


# ---- the workspace: one float buffer per (batch, threads), carved into activations ----------


def round16(n: Int) -> Int:
    """Keeps every sub-buffer 64-byte aligned when the workspace is."""
    return min((n + 15) // 16 * 16, HUGE)


@fieldwise_init
struct Workspace(Copyable):
    var x: Int        # (B, T, D) the residual stream
    var h: Int        # (B, T, D) LayerNorm output, attention output, patch embeddings
    var big: Int      # (B, T, max(3D, M)) qkv or MLP hidden; (B * N, CPP) patches first
    var scratch: Int  # threads x attention scratch
    var total: Int


def workspace(dims: ViTDims, batch: Int, nthreads: Int) -> Workspace:
    var bt = smul(batch, dims.t())
    var x = round16(smul(bt, dims.d))
    var big = round16(max(smul(bt, max(3 * dims.d, dims.mlp)),
                          smul(smul(batch, dims.n()), dims.cpp())))
    var per_thread = round16(attention_scratch_floats(dims.t(), dims.hd()))
    var scratch = round16(smul(nthreads, per_thread))
    return Workspace(0, x, 2 * x, 2 * x + big, min(2 * x + big + scratch, HUGE))


# ---- the forward -----------------------------------------------------------------------------


def weight(table: I64Ptr, entry: Int) -> F32Ptr:
    return ptr_at(Int(table[unsafe_offset=2 * entry]))


def vit_forward(dims: ViTDims, table: I64Ptr, images: F32Ptr, logits: F32Ptr, ws_base: F32Ptr,
                state: I64Ptr, batch: Int, eps: Float32, tid: Int, nthreads: Int):
    """images (B, C, H, W) -> logits (B, K): this thread's share of every op."""
    var ws = workspace(dims, batch, nthreads)
    var x = ws_base.unsafe_offset(ws.x)
    var h = ws_base.unsafe_offset(ws.h)
    var big = ws_base.unsafe_offset(ws.big)
    var scratch = ws_base.unsafe_offset(
        ws.scratch + tid * round16(attention_scratch_floats(dims.t(), dims.hd())))
    var d = dims.d
    var n = dims.n()
    var t = dims.t()
    var cpp = dims.cpp()
    var bt = batch * t
    var gelu = EPI_GELU_TANH if dims.gelu_tanh else EPI_GELU_ERF

    # patch embedding: im2col (+ LayerNorm) -> GEMM into h -> class token, LayerNorm, position
    im2col(images, big, batch, dims.chans, dims.image, dims.patch, weight(table, WT_PRE_W),
           weight(table, WT_PRE_B), dims.norm_pre, eps, tid, nthreads)
    barrier(state, nthreads)
    gemm[EPI_BIAS](big, cpp, weight(table, WT_PATCH), weight(table, WT_PATCH_B), h, d, h, d,
                   batch * n, d, cpp, tid, nthreads)
    barrier(state, nthreads)
    embed_tokens(h, weight(table, WT_CLS), weight(table, WT_POS), x, batch, n, d,
                 weight(table, WT_POST_W), weight(table, WT_POST_B), dims.norm_post, eps, tid,
                 nthreads)
    barrier(state, nthreads)

    for i in range(dims.depth):
        var bl = WT_BLOCKS + BL_LEN * i
        # Only the class tokens reach the head, so after the keys and values of the last block
        # its queries, projection and MLP run on the B class-token rows alone (T * D apart).
        var last = i == dims.depth - 1
        var rows = batch if last else bt
        var ld = t * d if last else d
        # x = x + proj(attention(qkv(norm1(x))))
        layernorm(x, d, weight(table, bl + BL_NORM1_W), weight(table, bl + BL_NORM1_B), h, d,
                  bt, d, eps, tid, nthreads)
        barrier(state, nthreads)
        var wqkv = weight(table, bl + BL_QKV)
        var bqkv = weight(table, bl + BL_QKV_B)
        if last and d % NR == 0:
            # keys and values of every token (the panels past the first D columns), then the
            # class tokens' queries; the two GEMMs write disjoint columns, so no barrier between
            var qp = d // NR
            gemm[EPI_BIAS](h, d, wqkv.unsafe_offset(qp * d * NR), bqkv.unsafe_offset(d),
                           big.unsafe_offset(d), 3 * d, big, 3 * d, bt, 2 * d, d, tid, nthreads)
            gemm[EPI_BIAS](h, t * d, wqkv, bqkv, big, t * 3 * d, big, 3 * d, batch, d, d, tid,
                           nthreads)
        else:
            gemm[EPI_BIAS](h, d, wqkv, bqkv, big, 3 * d, big, 3 * d, bt, 3 * d, d, tid, nthreads)
        barrier(state, nthreads)
        attention(big, h, scratch, batch, t, d, dims.heads, 1 if last else t, tid, nthreads)
        barrier(state, nthreads)
        gemm[EPI_RESIDUAL](h, ld, weight(table, bl + BL_PROJ), weight(table, bl + BL_PROJ_B), x,
                           ld, x, ld, rows, d, d, tid, nthreads)
        barrier(state, nthreads)
        # x = x + fc2(gelu(fc1(norm2(x)))); norm2 writes its rows packed, (rows, D)
        layernorm(x, ld, weight(table, bl + BL_NORM2_W), weight(table, bl + BL_NORM2_B), h, d,
                  rows, d, eps, tid, nthreads)
        barrier(state, nthreads)
        gemm_any(gelu, h, d, weight(table, bl + BL_FC1), weight(table, bl + BL_FC1_B), big,
                 dims.mlp, big, dims.mlp, rows, dims.mlp, d, tid, nthreads)
        barrier(state, nthreads)
        gemm[EPI_RESIDUAL](big, dims.mlp, weight(table, bl + BL_FC2),
                           weight(table, bl + BL_FC2_B), x, ld, x, ld, rows, d, dims.mlp, tid,
                           nthreads)
        barrier(state, nthreads)

    # final LayerNorm of the class tokens only (it is per token), then the head
    var tail = WT_BLOCKS + BL_LEN * dims.depth
    layernorm(x, t * d, weight(table, tail + TAIL_NORM_W), weight(table, tail + TAIL_NORM_B), h,
              d, batch, d, eps, tid, nthreads)
    barrier(state, nthreads)
    gemm[EPI_BIAS](h, d, weight(table, tail + TAIL_HEAD), weight(table, tail + TAIL_HEAD_B),
                   logits, dims.classes, logits, dims.classes, batch, dims.classes, d, tid,
                   nthreads)
