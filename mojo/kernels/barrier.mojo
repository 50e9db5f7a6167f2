# A sense-counting spin barrier over two int64 words that Python allocates per workspace:
# state[0] counts arrivals, state[1] is the generation. The threads of one forward call meet
# here between ops; a call is one ctypes call per thread, so no Python runs between ops.

from std.atomic import Atomic
from std.ffi import external_call

from common import I64Ptr

# spins before yielding the core: a short op finishes within them, and a descheduled peer
# (a shared machine) does not cost a whole time slice of spinning
comptime SPINS_BEFORE_YIELD = 4000


def barrier(state: I64Ptr, nthreads: Int):
    if nthreads == 1:
        return
    var generation = state.unsafe_offset(1)
    var gen = Atomic[Int64].load(generation)
    var arrived = Atomic[Int64].fetch_add(state, 1)
    if Int(arrived) == nthreads - 1:
        # the last to arrive resets the count before releasing the others
        Atomic[Int64].store(state, 0)
        _ = Atomic[Int64].fetch_add(generation, 1)
        return
    var spins = 0
    while Atomic[Int64].load(generation) == gen:
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:
            _ = external_call["sched_yield", Int32]()
