# Shared by every kernel: pointer types, the SIMD width of the host, and the rule that splits
# work between the threads of one call.

from std.memory import Pointer
from std.sys.info import simd_width_of

comptime F32Ptr = Pointer[Float32, MutAnyOrigin]
comptime I64Ptr = Pointer[Int64, MutAnyOrigin]

# float32 lanes of one vector register: 16 with AVX-512, 8 with AVX2 or NEON
comptime W = simd_width_of[DType.float32]()
comptime F32V = SIMD[DType.float32, W]


def share_begin(n: Int, tid: Int, nthreads: Int) -> Int:
    """First item of thread tid's contiguous share of n items (the next thread's begin ends it)."""
    return n * tid // nthreads


def ptr_at(addr: Int) -> F32Ptr:
    return F32Ptr(unsafe_from_address=addr)
