// The CPU emulator's scheduler and the CUDA runtime calls polyvit makes, on host memory.
// Each CUDA thread of a block is a ucontext fiber; the scheduler runs the block's fibers until
// each reaches a barrier or returns, and opens a barrier when every live thread of its scope
// (block or warp) waits at it. A barrier nobody can open is reported as a deadlock.
//
// A GPU promises no order between blocks, nor between threads before a barrier; run in index
// order, a kernel that depends on one would pass here and fail there. So the blocks of a launch
// run in a random order, and the threads between two barriers in a new random order each time,
// drawn from EMU_SEED (default 1: reproducible; 0: index order, the emulator's schedule before
// issue 14, to tell whether a failure depends on the order). Shared memory, static and dynamic,
// is poisoned at the start of every block, so nothing a block reads before writing it can come
// from the block before it. Launches over the GPU's limits fail as they would there.
#include <ucontext.h>

#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda_emulation.h"

namespace emu {

dim3 thread_idx, block_idx, block_dim, grid_dim;
alignas(256) static unsigned char smem_buffer[256 * 1024];
unsigned char* dynamic_smem = smem_buffer;

constexpr unsigned char kPoison = 0xAB;                 // uninitialised shared memory
constexpr size_t kStaticSharedLimit = 48 * 1024;        // what a kernel may declare statically
constexpr size_t kDynamicSharedDefault = 48 * 1024;     // dynamic, without an opt-in
constexpr size_t kSharedOptinLimit = 227 * 1024;        // static + dynamic, with one (H100)
static_assert(kSharedOptinLimit <= sizeof smem_buffer, "the buffer holds what a block may have");

// ---- errors ----------------------------------------------------------------------------------------

// What cudaGetLastError reports, per host thread as in the runtime; the text of the last launch
// failure stays for cudaGetErrorString, which CudaError's message calls after the reset.
static thread_local cudaError_t last_error = cudaSuccess;
static thread_local cudaError_t failure_code = cudaSuccess;
static thread_local std::string failure_text;

static void set_error(cudaError_t code, const std::string& text) {
  if (last_error == cudaSuccess) last_error = code;
  failure_code = code;
  failure_text = "emulator: " + text;
}

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

// ---- the launch being run ------------------------------------------------------------------------

static std::mt19937_64 order_rng;  // drawn from under launch_mutex only
static bool shuffled = true;       // EMU_SEED != 0
static size_t launch_smem = 0;     // the running launch's dynamic shared memory
static std::vector<std::pair<void*, size_t>> static_arrays;  // its static shared arrays
static size_t static_bytes = 0;
static bool launch_failed = false;  // a check inside the kernel failed: run nothing more

// Ends the launch from inside a fiber: the fiber never resumes and no further block runs.
[[noreturn]] static void fail_launch(cudaError_t code, const std::string& text) {
  set_error(code, text);
  launch_failed = true;
  current->done = true;
  swapcontext(&current->context, &scheduler);
  std::abort();  // not reached: the scheduler never switches back
}

void kernel_entry(long long max_threads, long long, long long) {
  const long long threads = 1LL * block_dim.x * block_dim.y * block_dim.z;
  if (max_threads > 0 && threads > max_threads)
    fail_launch(cudaErrorLaunchOutOfResources,
                "a block of " + std::to_string(threads) + " threads exceeds the kernel's "
                "__launch_bounds__(" + std::to_string(max_threads) + ")");
}

void static_shared(void* array, size_t bytes) {
  for (const auto& known : static_arrays)
    if (known.first == array) return;  // poisoned at the block's start
  static_arrays.emplace_back(array, bytes);
  static_bytes += bytes;
  if (static_bytes > kStaticSharedLimit)
    fail_launch(cudaErrorLaunchOutOfResources,
                "the kernel declares " + std::to_string(static_bytes) + " bytes of static shared "
                "memory, above the 48 KiB limit (ptxas refuses it; use dynamic shared memory and "
                "cudaFuncSetAttribute)");
  if (static_bytes + launch_smem > kSharedOptinLimit)
    fail_launch(cudaErrorLaunchOutOfResources,
                std::to_string(static_bytes) + " bytes of static and " + std::to_string(launch_smem) +
                    " of dynamic shared memory exceed the " + std::to_string(kSharedOptinLimit) +
                    " a block may have");
  std::memset(array, kPoison, bytes);  // the first block to declare it: no thread has written it
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
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  for (;;) {
    // Each stretch between barriers runs its threads in a new order.
    if (shuffled) std::shuffle(order.begin(), order.end(), order_rng);
    bool ran = false;
    for (int i : order) {
      Fiber& f = fibers[i];
      if (f.done || f.wait != kRunning) continue;
      current = &f;
      thread_idx = dim3(f.id % block_dim.x, f.id / block_dim.x % block_dim.y, f.id / (block_dim.x * block_dim.y));
      swapcontext(&scheduler, &f.context);
      if (launch_failed) return;
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
  const void* kernel;
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

static int env_int(const char* name, long long fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : static_cast<int>(fallback);
}

// The current device per host thread, as in the runtime; EMU_DEVICES devices (default 1).
static thread_local int current_device = 0;
static int device_count() { return std::max(1, env_int("EMU_DEVICES", 1)); }

// cudaFuncAttributeMaxDynamicSharedMemorySize per (device, kernel), as cudaFuncSetAttribute set it.
static std::mutex attribute_mutex;
static std::map<std::pair<int, const void*>, size_t> dynamic_smem_optin;

// What a GPU checks when the launch is made; the text says why, or is empty.
static std::pair<cudaError_t, std::string> refuse(const Recorded& launch) {
  const dim3 g = launch.grid, b = launch.block;
  const unsigned long long threads = 1ULL * b.x * b.y * b.z;
  if (threads == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64)
    return {cudaErrorInvalidConfiguration,
            "a block of (" + std::to_string(b.x) + ", " + std::to_string(b.y) + ", " + std::to_string(b.z) +
                ") threads; a GPU runs 1 to 1024, at most (1024, 1024, 64)"};
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    return {cudaErrorInvalidConfiguration,
            "a grid of (" + std::to_string(g.x) + ", " + std::to_string(g.y) + ", " + std::to_string(g.z) +
                ") blocks; a GPU runs 1 to (2^31 - 1, 65535, 65535)"};
  size_t allowed = kDynamicSharedDefault;
  {
    const std::lock_guard<std::mutex> lock(attribute_mutex);
    const auto found = dynamic_smem_optin.find({current_device, launch.kernel});
    if (found != dynamic_smem_optin.end()) allowed = std::max(allowed, found->second);
  }
  if (launch.smem > allowed)
    return {cudaErrorInvalidValue,
            std::to_string(launch.smem) + " bytes of dynamic shared memory, above the " + std::to_string(allowed) +
                " the kernel may use" + (allowed == kDynamicSharedDefault
                                             ? " without cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)"
                                             : " (its cudaFuncSetAttribute opt-in)")};
  return {cudaSuccess, ""};
}

static void start_shuffling() {  // once, from EMU_SEED
  static bool started = false;
  if (started) return;
  started = true;
  const long long seed = env_int("EMU_SEED", 1);
  shuffled = seed != 0;
  order_rng.seed(static_cast<unsigned long long>(seed));
}

// Runs every block, in a random order (see the top of this file); false when a check inside the
// kernel failed the launch (the error is set).
static bool execute(const Recorded& launch) {
  const std::lock_guard<std::mutex> lock(launch_mutex);
  const auto [code, why] = refuse(launch);  // again at replay: a graph holds what it captured
  if (code != cudaSuccess) {
    set_error(code, why);
    return false;
  }
  start_shuffling();
  const dim3 g = launch.grid, b = launch.block;
  const unsigned threads = b.x * b.y * b.z;
  while (stack_pool.size() < threads) stack_pool.emplace_back(new char[kStackBytes]);
  std::vector<Fiber> fibers(threads);
  for (unsigned i = 0; i < threads; ++i) {
    fibers[i].id = static_cast<int>(i);
    fibers[i].stack = stack_pool[i].get();
  }
  block_dim = b;
  grid_dim = g;
  launch_smem = launch.smem;
  static_arrays.clear();
  static_bytes = 0;
  launch_failed = false;
  body = const_cast<std::function<void()>*>(&launch.body);
  const unsigned long long blocks = 1ULL * g.x * g.y * g.z;
  std::vector<unsigned long long> order(blocks);
  std::iota(order.begin(), order.end(), 0ULL);
  if (shuffled) std::shuffle(order.begin(), order.end(), order_rng);
  for (const unsigned long long i : order) {
    block_idx = dim3(static_cast<unsigned>(i % g.x), static_cast<unsigned>(i / g.x % g.y),
                     static_cast<unsigned>(i / g.x / g.y));
    std::memset(smem_buffer, kPoison, launch.smem);  // uninitialised, as on a GPU
    for (const auto& [array, bytes] : static_arrays) std::memset(array, kPoison, bytes);
    run_block(fibers);
    if (launch_failed) return false;
  }
  return true;
}

void launch(dim3 grid, dim3 block, size_t smem, const void* kernel, std::function<void()> body) {
  Recorded launch{grid, block, smem, kernel, std::move(body)};
  const auto [code, why] = refuse(launch);
  if (code != cudaSuccess) {
    set_error(code, why);
    return;
  }
  if (capturing)
    recording.push_back(std::move(launch));
  else
    execute(launch);
}

// Device allocations are host memory; remembered (with their device) so cudaPointerGetAttributes
// can tell them apart. Several host threads allocate at once.
struct Allocation {
  size_t bytes;
  int device;
};
static std::mutex allocation_mutex;
static std::map<uintptr_t, Allocation> allocations;

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

cudaError_t cudaGetDeviceCount(int* n) { *n = device_count(); return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = current_device; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) {
  if (d < 0 || d >= device_count()) return last_error = cudaErrorInvalidDevice;
  current_device = d;
  return cudaSuccess;
}
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
  else if (attr == cudaDevAttrMaxSharedMemoryPerBlockOptin) *v = static_cast<int>(kSharedOptinLimit);
  else if (attr == cudaDevAttrMemoryPoolsSupported) *v = 1;
  else return cudaErrorInvalidValue;
  return cudaSuccess;
}

// Only the dynamic shared-memory opt-in is modelled; it holds per device, as on a GPU.
cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  refuse_while_capturing("cudaFuncSetAttribute");
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > kSharedOptinLimit) return last_error = cudaErrorInvalidValue;
    const std::lock_guard<std::mutex> lock(attribute_mutex);
    dynamic_smem_optin[{current_device, kernel}] = static_cast<size_t>(value);
  }
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return std::exchange(last_error, cudaSuccess); }
cudaError_t cudaPeekAtLastError() { return last_error; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorEmulated";
  }
}
// A launch failure's own text (what was over which limit); the runtime's wording otherwise.
const char* cudaGetErrorString(cudaError_t e) {
  if (e != cudaSuccess && e == failure_code) return failure_text.c_str();
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "emulated error";
  }
}

// EMU_MAX_ALLOC (bytes) makes larger allocations fail, to exercise out-of-memory paths.
cudaError_t cudaMalloc(void** p, size_t n) {
  refuse_while_capturing("cudaMalloc");
  const char* limit = std::getenv("EMU_MAX_ALLOC");
  if (limit && n > static_cast<size_t>(std::atoll(limit))) return last_error = cudaErrorMemoryAllocation;
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256);
  if (!*p) return last_error = cudaErrorMemoryAllocation;
  std::memset(*p, 0xCD, n);  // uninitialised, as on a GPU
  const std::lock_guard<std::mutex> lock(allocation_mutex);
  allocations[reinterpret_cast<uintptr_t>(*p)] = {n, current_device};
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  {
    const std::lock_guard<std::mutex> lock(allocation_mutex);
    allocations.erase(reinterpret_cast<uintptr_t>(p));
  }
  std::free(p);
  return cudaSuccess;
}
// Stream-ordered: every call here completes before it returns, so the order holds trivially.
cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) {
  refuse_while_capturing("cudaMallocAsync");
  return cudaMalloc(p, n);
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  std::memset(a, 0, sizeof *a);
  const uintptr_t x = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(allocation_mutex);
  const auto after = allocations.upper_bound(x);
  const bool inside = after != allocations.begin() && x < std::prev(after)->first + std::prev(after)->second.bytes;
  a->type = inside ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  a->device = inside ? std::prev(after)->second.device : -2;
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
// A launch that fails inside a replayed graph ends the replay, and the graph launch reports it.
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  for (const Recorded& launch : *reinterpret_cast<std::vector<Recorded>*>(e))
    if (!execute(launch)) return cudaGetLastError();
  return cudaSuccess;
}

}  // extern "C"
