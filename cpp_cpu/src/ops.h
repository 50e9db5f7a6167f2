// ops.h — drivers: each op split over a team of threads, calling the per-ISA kernels.
#pragma once

#include "kernels.h"
#include "parallel.h"

namespace polyvit::cpu {

// This thread's block of a GEMM with `rows` rows and `panels` column panels: threads form a
// grid over (rows, panels), panels first, which at batch 1 (50 rows) splits the weights rather
// than the few rows, so each thread streams only its part of the weights.
struct GemmPart { int m0, m1, p0, p1; };
GemmPart gemm_part(int rows, int panels, int mr, Team team);

void gemm_f32(const Kernels& k, const GemmF32& g, Team team);
void gemm_bf16(const KernelsBf16& k, const GemmBf16& g, Team team);
void gemm_int8(const KernelsInt8& k, const GemmInt8& g, Team team);

void layernorm(const Kernels& k, const float* x, long ldx, float* y, long ldy, int rows, int c,
               const float* w, const float* b, float eps, Team team);

// Both phases of attention with a barrier between; scratch holds attention_scratch() floats
// per thread, thread i at scratch + i * stride.
void attention(const Kernels& k, const Attention& at, float* scratch, long stride, Team team);
void attention_bf16(const KernelsBf16& k, const Attention& at, float* scratch, long stride,
                    Team team);

// Keys padded to whole vectors of the widest ISA (16 floats).
inline int attention_tp(int tokens) { return (tokens + 15) / 16 * 16; }

}  // namespace polyvit::cpu
