// The CPU emulator's scheduler and the CUDA runtime calls polyvit makes, on host memory.
// Each CUDA thread of a block is a ucontext fiber; the scheduler runs the block's fibers round
// robin until each reaches a barrier or returns, and opens a barrier when every live thread of
// its scope (block or warp) waits at it. A barrier nobody can open is reported as a deadlock.
#include <ucontext.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda_emulation.h"

namespace emu {

dim3 thread_idx, block_idx, block_dim, grid_dim;
alignas(256) static unsigned char smem_buffer[256 * 1024];
unsigned char* dynamic_smem = smem_buffer;

// ---- fibers ----------------------------------------------------------------------------------------

enum Wait { kRunning, kBlockBarrier, kWarpBarrier };

constexpr size_t kStackBytes = 128 * 1024;

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;  // kStackBytes, from stack_pool
  int id = 0;
  bool done = false;
  Wait wait = kRunning;
};

static ucontext_t scheduler;
static Fiber* current = nullptr;
static std::function<void()>* body = nullptr;
static float exchange[1024];  // one slot per thread, for shuffles

static void fiber_main() {
  (*body)();
  current->done = true;
  swapcontext(&current->context, &scheduler);
}

static void wait_at(Wait wait) {
  current->wait = wait;
  swapcontext(&current->context, &scheduler);
}

void sync_block() { wait_at(kBlockBarrier); }
void sync_warp() { wait_at(kWarpBarrier); }

float shuffle_xor(float v, int offset) {
  const int id = current->id, lane = id % 32;
  exchange[id] = v;
  sync_warp();
  const float other = exchange[id - lane + (lane ^ offset)];
  sync_warp();
  return other;
}

static void fail(const char* what) {
  std::fprintf(stderr, "emulator: %s in block (%u, %u, %u)\n", what, block_idx.x, block_idx.y, block_idx.z);
  std::abort();
}

static void run_block(std::vector<Fiber>& fibers) {
  for (Fiber& f : fibers) {
    f.done = false;
    f.wait = kRunning;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  const int n = static_cast<int>(fibers.size());
  for (;;) {
    bool ran = false;
    for (Fiber& f : fibers) {
      if (f.done || f.wait != kRunning) continue;
      current = &f;
      thread_idx = dim3(f.id % block_dim.x, f.id / block_dim.x % block_dim.y, f.id / (block_dim.x * block_dim.y));
      swapcontext(&scheduler, &f.context);
      ran = true;
    }
    int live = 0, at_block = 0;
    for (const Fiber& f : fibers) {
      live += !f.done;
      at_block += !f.done && f.wait == kBlockBarrier;
    }
    if (live == 0) return;
    bool opened = false;
    if (at_block == live) {
      for (Fiber& f : fibers) f.wait = kRunning;
      opened = true;
    }
    for (int w0 = 0; w0 < n; w0 += 32) {
      const int w1 = std::min(n, w0 + 32);
      int lanes = 0, waiting = 0;
      for (int i = w0; i < w1; ++i) {
        lanes += !fibers[i].done;
        waiting += !fibers[i].done && fibers[i].wait == kWarpBarrier;
      }
      if (lanes > 0 && waiting == lanes) {
        for (int i = w0; i < w1; ++i) fibers[i].wait = kRunning;
        opened = true;
      }
    }
    if (!ran && !opened) fail("deadlock: threads wait at barriers that cannot open");
  }
}

// ---- launches and capture --------------------------------------------------------------------------

struct Recorded {
  dim3 grid, block;
  size_t smem;
  std::function<void()> body;
};
static bool capturing = false;
static std::vector<Recorded> recording;
// Fiber stacks, allocated once and reused by every launch: allocating (and the kernel zeroing)
// 32 MB of fresh stacks per launch cost more than most kernels' emulation.
static std::vector<std::unique_ptr<char[]>> stack_pool;
// One launch at a time: the scheduler, thread_idx and the shared memory are process-wide, and
// the ops may be called from several host threads.
static std::mutex launch_mutex;

static void execute(const Recorded& launch) {
  const std::lock_guard<std::mutex> lock(launch_mutex);
  const dim3 g = launch.grid, b = launch.block;
  const unsigned threads = b.x * b.y * b.z;
  if (threads == 0 || threads > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535)
    fail("invalid launch configuration");
  if (launch.smem > sizeof smem_buffer) fail("too much dynamic shared memory");
  while (stack_pool.size() < threads) stack_pool.emplace_back(new char[kStackBytes]);
  std::vector<Fiber> fibers(threads);
  for (unsigned i = 0; i < threads; ++i) {
    fibers[i].id = static_cast<int>(i);
    fibers[i].stack = stack_pool[i].get();
  }
  block_dim = b;
  grid_dim = g;
  std::memset(smem_buffer, 0xAB, launch.smem);  // uninitialised, as on a GPU
  body = const_cast<std::function<void()>*>(&launch.body);
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        block_idx = dim3(x, y, z);
        run_block(fibers);
      }
}

void launch(dim3 grid, dim3 block, size_t smem, std::function<void()> body) {
  if (capturing)
    recording.push_back({grid, block, smem, std::move(body)});
  else
    execute({grid, block, smem, std::move(body)});
}

// Device allocations are host memory; remembered so cudaPointerGetAttributes can tell them apart.
static std::map<uintptr_t, size_t> allocations;

static int env_int(const char* name, long long fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : static_cast<int>(fallback);
}

static void refuse_while_capturing(const char* call) {
  if (capturing) {
    std::fprintf(stderr, "emulator: %s while a stream is being captured\n", call);
    std::abort();
  }
}

}  // namespace emu

// ---- the runtime API -------------------------------------------------------------------------------

using namespace emu;

extern "C" {

cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = CUDART_VERSION; return cudaSuccess; }

// EMU_SMS sets the multiprocessor count the launchers size their grids by (default 132, an
// H100): 1 makes every linear take its large tiles.
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::memset(p, 0, sizeof *p);
  std::strcpy(p->name, "CPU emulation");
  p->major = 9;
  p->multiProcessorCount = env_int("EMU_SMS", 132);
  p->totalGlobalMem = size_t(8) << 30;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties_v2(cudaDeviceProp* p, int d) { return cudaGetDeviceProperties(p, d); }

cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
  if (attr == cudaDevAttrMultiProcessorCount) *v = env_int("EMU_SMS", 132);
  else if (attr == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = 227 * 1024;
  else return cudaErrorInvalidValue;
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) {
  refuse_while_capturing("cudaFuncSetAttribute");
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return cudaSuccess; }
cudaError_t cudaPeekAtLastError() { return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaErrorEmulated";
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? "out of memory" : "emulated error";
}

// EMU_MAX_ALLOC (bytes) makes larger allocations fail, to exercise out-of-memory paths.
cudaError_t cudaMalloc(void** p, size_t n) {
  refuse_while_capturing("cudaMalloc");
  const char* limit = std::getenv("EMU_MAX_ALLOC");
  if (limit && n > static_cast<size_t>(std::atoll(limit))) return cudaErrorMemoryAllocation;
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xCD, n);  // uninitialised, as on a GPU
  allocations[reinterpret_cast<uintptr_t>(*p)] = n;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  allocations.erase(reinterpret_cast<uintptr_t>(p));
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  std::memset(a, 0, sizeof *a);
  const uintptr_t x = reinterpret_cast<uintptr_t>(p);
  const auto after = allocations.upper_bound(x);
  const bool inside = after != allocations.begin() && x < std::prev(after)->first + std::prev(after)->second;
  a->type = inside ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  refuse_while_capturing("cudaMemcpy");
  std::memcpy(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  refuse_while_capturing("cudaMemcpyAsync");
  std::memcpy(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* d, int v, size_t n) { std::memset(d, v, n); return cudaSuccess; }

// Launches run when they are made, so every synchronisation is already done.
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  *s = reinterpret_cast<cudaStream_t>(new char);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<char*>(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { refuse_while_capturing("cudaStreamSynchronize"); return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = reinterpret_cast<cudaEvent_t>(new char); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete reinterpret_cast<char*>(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 0.0f; return cudaSuccess; }

// A captured graph is the list of its launches; replaying it runs them in order.
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  capturing = true;
  recording.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  capturing = false;
  *graph = reinterpret_cast<cudaGraph_t>(new std::vector<Recorded>(std::move(recording)));
  recording.clear();
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete reinterpret_cast<std::vector<Recorded>*>(g); return cudaSuccess; }
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  *exec = reinterpret_cast<cudaGraphExec_t>(new std::vector<Recorded>(*reinterpret_cast<std::vector<Recorded>*>(g)));
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete reinterpret_cast<std::vector<Recorded>*>(e); return cudaSuccess; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  for (const Recorded& launch : *reinterpret_cast<std::vector<Recorded>*>(e)) execute(launch);
  return cudaSuccess;
}

}  // extern "C"
