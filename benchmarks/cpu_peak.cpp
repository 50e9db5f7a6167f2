// cpu_peak.cpp — the instruction limits docs/backends/cpp.md compares the GEMMs against: how
// many fp32 FMA, vdpbf16ps and vpdpbusd (zmm) one core retires per second, from register-only
// loops of 24 independent accumulators (no loads, so nothing but the dot-product units bounds
// them), timed on every core at once.
//
//   g++ -O2 -mavx512f -mavx512bf16 -mavx512vnni -fopenmp benchmarks/cpu_peak.cpp -o /tmp/cpu_peak
//   /tmp/cpu_peak [threads]
//
// Prints G operations per second per core and for all threads (a multiply-add counts two:
// 32 per fp32 FMA, 64 per vdpbf16ps, 128 per vpdpbusd).
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

// 24 copies of one instruction on accumulators zmm2..zmm25 with sources zmm0, zmm1.
#define PV_X24(op)                                                                              \
  op " %%zmm0, %%zmm1, %%zmm2\n" op " %%zmm0, %%zmm1, %%zmm3\n" op " %%zmm0, %%zmm1, %%zmm4\n" \
  op " %%zmm0, %%zmm1, %%zmm5\n" op " %%zmm0, %%zmm1, %%zmm6\n" op " %%zmm0, %%zmm1, %%zmm7\n"  \
  op " %%zmm0, %%zmm1, %%zmm8\n" op " %%zmm0, %%zmm1, %%zmm9\n" op " %%zmm0, %%zmm1, %%zmm10\n" \
  op " %%zmm0, %%zmm1, %%zmm11\n" op " %%zmm0, %%zmm1, %%zmm12\n"                              \
  op " %%zmm0, %%zmm1, %%zmm13\n" op " %%zmm0, %%zmm1, %%zmm14\n"                              \
  op " %%zmm0, %%zmm1, %%zmm15\n" op " %%zmm0, %%zmm1, %%zmm16\n"                              \
  op " %%zmm0, %%zmm1, %%zmm17\n" op " %%zmm0, %%zmm1, %%zmm18\n"                              \
  op " %%zmm0, %%zmm1, %%zmm19\n" op " %%zmm0, %%zmm1, %%zmm20\n"                              \
  op " %%zmm0, %%zmm1, %%zmm21\n" op " %%zmm0, %%zmm1, %%zmm22\n"                              \
  op " %%zmm0, %%zmm1, %%zmm23\n" op " %%zmm0, %%zmm1, %%zmm24\n"                              \
  op " %%zmm0, %%zmm1, %%zmm25\n"
#define PV_CLOBBERS                                                                            \
  "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",   \
      "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21",         \
      "xmm22", "xmm23", "xmm24", "xmm25"

constexpr long kIters = 20000000;  // 480 M instructions: about 0.15 s a kind at 1 per cycle

void fma_loop() {
  for (long i = 0; i < kIters; ++i) __asm__ volatile(PV_X24("vfmadd231ps") ::: PV_CLOBBERS);
}
void bf16_loop() {
  for (long i = 0; i < kIters; ++i) __asm__ volatile(PV_X24("vdpbf16ps") ::: PV_CLOBBERS);
}
void vnni_loop() {
  for (long i = 0; i < kIters; ++i) __asm__ volatile(PV_X24("vpdpbusd") ::: PV_CLOBBERS);
}

// Seconds the slowest of `threads` threads takes for loop(), all started together.
double timed(void (*loop)(), int threads) {
  double slowest = 0;
#pragma omp parallel num_threads(threads) reduction(max : slowest)
  {
#pragma omp barrier
    const auto t0 = std::chrono::steady_clock::now();
    loop();
    slowest = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return slowest;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : omp_get_max_threads();
  if (threads < 1) {
    std::fprintf(stderr, "usage: cpu_peak [threads >= 1]\n");
    return 2;
  }
  struct Kind { const char* name; void (*loop)(); double ops; } kinds[] = {
      {"fp32 FMA (vfmadd231ps)", fma_loop, 32}, {"bf16 (vdpbf16ps)", bf16_loop, 64},
      {"int8 (vpdpbusd)", vnni_loop, 128}};
  std::printf("%d threads; G operations/s, best of 3 runs\n", threads);
  for (const Kind& k : kinds) {
    double best = 1e30;
    for (int run = 0; run < 3; ++run) {
      const double s = timed(k.loop, threads);
      if (s < best) best = s;
    }
    const double per_core = 24.0 * kIters * k.ops / best / 1e9;
    std::printf("%-24s %7.1f per core %8.1f all threads\n", k.name, per_core, per_core * threads);
  }
  return 0;
}
