// ops.h — drivers: each op split over a team of threads, calling the per-ISA kernels (the
// linear op's driver is linear.h).
#pragma once

#include "kernels.h"
#include "linear.h"
#include "parallel.h"

namespace polyvit::cpu {

void layernorm(const Kernels& k, const float* x, long ldx, float* y, long ldy, int rows, int c,
               const float* w, const float* b, float eps, Team team);

// Both phases of attention with a barrier between; scratch holds attention_scratch() floats
// per thread, thread i at scratch + i * stride.
void attention(const Kernels& k, const Attention& at, float* scratch, long stride, Team team);
void attention_bf16(const KernelsBf16& k, const Attention& at, float* scratch, long stride,
                    Team team);

// Keys padded to whole vectors of the widest ISA (16 floats).
inline int attention_tp(int tokens) { return (tokens + 15) / 16 * 16; }

// The patch embedding: images (B, C, H, W) -> patches (B * N, C*P*P) by im2col in (c, py, px)
// order, each row layer-normed when norm_w is set (patch_norm_pre), then out (B * N, D) =
// linear(proj). Barriers inside: every thread of the team calls it.
struct PatchEmbed {
  const float* images;              // (B, C, H, W)
  int batch, chans, height, width, patch;
  const float* norm_w = nullptr;    // (C*P*P,) or nullptr
  const float* norm_b = nullptr;    // (C*P*P,)
  float eps = 0.0f;
  float* patches;                   // (B * N, C*P*P) scratch
  float* out;                       // (B * N, D)
};
void patch_embed(const Engine& e, const Linear& proj, const PatchEmbed& pe, const Operand& op,
                 Team team);

}  // namespace polyvit::cpu
