# The C ABI of the Mojo backend, loaded by python/polyvit/backends/mojo_backend.py with ctypes.
#
# Every function takes integers only (addresses, float counts, dimensions) and returns 0 or a
# negative status -(100 * kind + argument position), which Python turns into a message naming
# the argument. Each checks its arguments here, at the boundary, before any kernel runs: null
# addresses, dimensions out of range, buffers shorter than the dimensions need, a thread index
# outside the team. A forward call's threads get the same arguments, so they all pass or all
# fail the checks and none waits at a barrier for a thread that returned early.

from attention import attention, attention_scratch_floats
from common import I64Ptr, ptr_at
from gelu_erf import bias_gelu_erf
from gelu_tanh import bias_gelu_tanh
from gemm import gemm_any, NR, EPI_RESIDUAL
from layernorm import layernorm
from vit_forward import CFG_LEN, packed_floats, padded_floats, read_dims, smul, vit_forward, \
    workspace

comptime ABI_VERSION = 1

comptime ERR_NULL = 1     # a null address
comptime ERR_DIM = 2      # a dimension <= 0, too large, or inconsistent with another
comptime ERR_SIZE = 3     # a buffer holds fewer floats than its dimensions need
comptime ERR_THREAD = 4   # tid outside [0, nthreads) or nthreads outside [1, MAX_THREADS]
comptime ERR_CHOICE = 5   # an unknown epilogue or GELU form
comptime ERR_CONFIG = 6   # the config array is inconsistent

comptime MAX_DIM = 1 << 30
comptime MAX_THREADS = 1024


def fail(kind: Int, arg: Int) -> Int:
    return -(100 * kind + arg)


def check_buffer(addr: Int, floats: Int, needed: Int, arg: Int) -> Int:
    if addr == 0:
        return fail(ERR_NULL, arg)
    if floats < needed:
        return fail(ERR_SIZE, arg)
    return 0


def check_dim(v: Int, arg: Int) -> Int:
    return 0 if 0 < v and v <= MAX_DIM else fail(ERR_DIM, arg)


def check_team(tid: Int, nthreads: Int, arg: Int) -> Int:
    if nthreads < 1 or nthreads > MAX_THREADS or tid < 0 or tid >= nthreads:
        return fail(ERR_THREAD, arg)
    return 0


# ---- facts Python needs --------------------------------------------------------------------


@export("polyvit_abi_version")
def polyvit_abi_version() abi("C") -> Int:
    return ABI_VERSION


@export("polyvit_gemm_nr")
def polyvit_gemm_nr() abi("C") -> Int:
    """Panel width of packed weights: Python packs (N, K) into (ceil(N / NR), K, NR)."""
    return NR


@export("polyvit_attention_scratch_floats")
def polyvit_attention_scratch_floats(t: Int, hd: Int) abi("C") -> Int:
    if check_dim(t, 1) != 0 or check_dim(hd, 2) != 0:
        return fail(ERR_DIM, 1)
    return attention_scratch_floats(t, hd)


# ---- single ops (the op-level parity harness) ----------------------------------------------


@export("polyvit_linear")
def polyvit_linear(epi: Int, x: Int, x_len: Int, bp: Int, bp_len: Int, bias: Int,
                   bias_len: Int, y: Int, y_len: Int, res: Int, res_len: Int, m: Int,
                   n: Int, k: Int, tid: Int, nthreads: Int) abi("C") -> Int:
    """Computes y (M, N) = epilogue(x (M, K) @ W^T + bias), W packed (NP, K, NR), bias (NP * NR,)."""
    if epi < 0 or epi > EPI_RESIDUAL:
        return fail(ERR_CHOICE, 1)
    for dim in [(m, 12), (n, 13), (k, 14)]:
        var status = check_dim(dim[0], dim[1])
        if status != 0:
            return status
    var mn = smul(m, n)
    var status = check_buffer(x, x_len, smul(m, k), 2)
    if status == 0:
        status = check_buffer(bp, bp_len, packed_floats(n, k), 4)
    if status == 0:
        status = check_buffer(bias, bias_len, padded_floats(n), 6)
    if status == 0:
        status = check_buffer(y, y_len, mn, 8)
    if status == 0 and epi == EPI_RESIDUAL:
        status = check_buffer(res, res_len, mn, 10)
    if status == 0:
        status = check_team(tid, nthreads, 15)
    if status != 0:
        return status
    var r = res if epi == EPI_RESIDUAL else y
    gemm_any(epi, ptr_at(x), k, ptr_at(bp), ptr_at(bias), ptr_at(y), n, ptr_at(r), n, m, n,
             k, tid, nthreads)
    return 0


@export("polyvit_layernorm")
def polyvit_layernorm(x: Int, x_len: Int, w: Int, w_len: Int, b: Int, b_len: Int, y: Int,
                      y_len: Int, m: Int, c: Int, eps: Float32, tid: Int,
                      nthreads: Int) abi("C") -> Int:
    """Computes y (M, C) = LayerNorm(x (M, C)) with w (C,), b (C,)."""
    var status = check_dim(m, 9)
    if status == 0:
        status = check_dim(c, 10)
    if status == 0:
        status = check_buffer(x, x_len, smul(m, c), 1)
    if status == 0:
        status = check_buffer(w, w_len, c, 3)
    if status == 0:
        status = check_buffer(b, b_len, c, 5)
    if status == 0:
        status = check_buffer(y, y_len, smul(m, c), 7)
    if status == 0 and not (eps > 0):
        status = fail(ERR_DIM, 11)
    if status == 0:
        status = check_team(tid, nthreads, 12)
    if status != 0:
        return status
    layernorm(ptr_at(x), c, ptr_at(w), ptr_at(b), ptr_at(y), c, m, c, eps, tid, nthreads)
    return 0


@export("polyvit_attention")
def polyvit_attention(qkv: Int, qkv_len: Int, y: Int, y_len: Int, scratch: Int,
                      scratch_len: Int, b: Int, t: Int, d: Int, heads: Int, tid: Int,
                      nthreads: Int) abi("C") -> Int:
    """Attention of qkv (B, T, 3D) into y (B, T, D); scratch holds nthreads x attention_scratch_floats."""
    for dim in [(b, 7), (t, 8), (d, 9), (heads, 10)]:
        var status = check_dim(dim[0], dim[1])
        if status != 0:
            return status
    if d % heads != 0:
        return fail(ERR_DIM, 10)
    var status = check_team(tid, nthreads, 11)
    var per_thread = attention_scratch_floats(t, d // heads)
    if status == 0:
        status = check_buffer(qkv, qkv_len, smul(smul(b, t), 3 * d), 1)
    if status == 0:
        status = check_buffer(y, y_len, smul(smul(b, t), d), 3)
    if status == 0:
        status = check_buffer(scratch, scratch_len, smul(nthreads, per_thread), 5)
    if status != 0:
        return status
    attention(ptr_at(qkv), ptr_at(y), ptr_at(scratch).unsafe_offset(tid * per_thread), b, t,
              d, heads, t, tid, nthreads)
    return 0


@export("polyvit_bias_gelu")
def polyvit_bias_gelu(tanh_form: Int, x: Int, x_len: Int, bias: Int, bias_len: Int, y: Int,
                      y_len: Int, m: Int, n: Int, tid: Int, nthreads: Int) abi("C") -> Int:
    """Computes y (M, N) = gelu(x (M, N) + bias (N,)), erf form (0) or tanh form (1)."""
    if tanh_form != 0 and tanh_form != 1:
        return fail(ERR_CHOICE, 1)
    var status = check_dim(m, 8)
    if status == 0:
        status = check_dim(n, 9)
    if status == 0:
        status = check_buffer(x, x_len, smul(m, n), 2)
    if status == 0:
        status = check_buffer(bias, bias_len, n, 4)
    if status == 0:
        status = check_buffer(y, y_len, smul(m, n), 6)
    if status == 0:
        status = check_team(tid, nthreads, 10)
    if status != 0:
        return status
    if tanh_form == 1:
        bias_gelu_tanh(ptr_at(x), ptr_at(bias), ptr_at(y), m, n, tid, nthreads)
    else:
        bias_gelu_erf(ptr_at(x), ptr_at(bias), ptr_at(y), m, n, tid, nthreads)
    return 0


# ---- the whole forward ---------------------------------------------------------------------


def check_config(cfg: Int, cfg_len: Int) -> Int:
    if cfg == 0:
        return fail(ERR_NULL, 1)
    if cfg_len != CFG_LEN:
        return fail(ERR_SIZE, 2)
    if not read_dims(I64Ptr(unsafe_from_address=cfg)).valid():
        return fail(ERR_CONFIG, 1)
    return 0


@export("polyvit_vit_workspace_floats")
def polyvit_vit_workspace_floats(cfg: Int, cfg_len: Int, batch: Int,
                                 nthreads: Int) abi("C") -> Int:
    """Floats of the workspace a forward of this batch size and thread count needs."""
    var status = check_config(cfg, cfg_len)
    if status == 0:
        status = check_dim(batch, 3)
    if status == 0:
        status = check_team(0, nthreads, 4)
    if status != 0:
        return status
    return workspace(read_dims(I64Ptr(unsafe_from_address=cfg)), batch, nthreads).total


@export("polyvit_vit_forward")
def polyvit_vit_forward(cfg: Int, cfg_len: Int, table: Int, table_len: Int, images: Int,
                        images_len: Int, logits: Int, logits_len: Int, ws: Int, ws_len: Int,
                        state: Int, state_len: Int, batch: Int, eps: Float32, tid: Int,
                        nthreads: Int) abi("C") -> Int:
    """Logits (B, K) of images (B, C, H, W): every thread of the team calls it, tid 0..n-1.

    table: (address, floats) int64 pairs of the packed weights (vit_forward.mojo's order);
    ws: the workspace (polyvit_vit_workspace_floats); state: 2 int64 barrier words, zeroed.
    """
    var status = check_config(cfg, cfg_len)
    if status != 0:
        return status
    var dims = read_dims(I64Ptr(unsafe_from_address=cfg))
    if table == 0:
        return fail(ERR_NULL, 3)
    if table_len != dims.table_len():
        return fail(ERR_SIZE, 4)
    var tab = I64Ptr(unsafe_from_address=table)
    for entry in range(table_len // 2):
        var floats = dims.weight_floats(entry)
        var addr = Int(tab[unsafe_offset=2 * entry])
        if Int(tab[unsafe_offset=2 * entry + 1]) != floats or (floats > 0 and addr == 0):
            return fail(ERR_SIZE, 3)
    status = check_dim(batch, 13)
    if status == 0:
        status = check_team(tid, nthreads, 15)
    var per_image = smul(smul(dims.chans, dims.image), dims.image)
    if status == 0:
        status = check_buffer(images, images_len, smul(batch, per_image), 5)
    if status == 0:
        status = check_buffer(logits, logits_len, smul(batch, dims.classes), 7)
    if status == 0:
        status = check_buffer(ws, ws_len, workspace(dims, batch, nthreads).total, 9)
    if status == 0:
        status = check_buffer(state, state_len, 2, 11)
    if status == 0 and not (eps > 0):
        status = fail(ERR_DIM, 14)
    if status != 0:
        return status
    vit_forward(dims, tab, ptr_at(images), ptr_at(logits), ptr_at(ws),
                I64Ptr(unsafe_from_address=state), batch, eps, tid, nthreads)
    return 0
