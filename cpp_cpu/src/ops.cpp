// ops.cpp — splitting each op's work over the threads of a team.
#include "ops.h"

#include <algorithm>

#include "patch_embed.h"

namespace polyvit::cpu {

void layernorm(const Kernels& k, const float* x, long ldx, float* y, long ldy, int rows, int c,
               const float* w, const float* b, float eps, Team team) {
  long r0, r1;
  team.split(rows, &r0, &r1);
  if (r0 < r1) k.layernorm(x + r0 * ldx, ldx, y + r0 * ldy, ldy, static_cast<int>(r1 - r0), c,
                           w, b, eps);
}

namespace {

template <class Keys, class Rows>
void attention_phases(Keys keys, Rows rows, int block, const Attention& at, float* scratch,
                      long stride, Team team) {
  long u0, u1;
  team.split(static_cast<long>(at.batch) * at.heads, &u0, &u1);
  if (u0 < u1) keys(at, static_cast<int>(u0), static_cast<int>(u1));
  barrier();
  const long blocks = (at.queries + block - 1) / block;
  team.split(static_cast<long>(at.batch) * at.heads * blocks, &u0, &u1);
  if (u0 < u1) rows(at, static_cast<int>(u0), static_cast<int>(u1), scratch + team.id * stride);
}

}  // namespace

void attention(const Kernels& k, const Attention& at, float* scratch, long stride, Team team) {
  attention_phases(k.attention_keys, k.attention_rows, k.attention_block, at, scratch, stride,
                   team);
}

void attention_bf16(const KernelsBf16& k, const Attention& at, float* scratch, long stride,
                    Team team) {
  attention_phases(k.attention_keys, k.attention_rows, k.attention_block, at, scratch, stride,
                   team);
}

void patch_embed(const Engine& e, const Linear& proj, const PatchEmbed& pe, const Operand& op,
                 Team team) {
  const int cols = pe.chans * pe.patch * pe.patch;
  const int rows = pe.batch * (pe.height / pe.patch) * (pe.width / pe.patch);
  long r0, r1;
  team.split(rows, &r0, &r1);
  if (!proj.w32.data()) {
    // bf16 and int8: im2col, the patch LayerNorm and the conversion to the GEMM's operand a
    // few rows at a time, through this thread's first rows of patches (in L2): the fp32 patch
    // matrix, as large as the images, is never written out whole and read back.
    constexpr long kRows = 8;
    float* rows_f32 = pe.patches + r0 * cols;
    for (long c0 = r0; c0 < r1; c0 += kRows) {
      const int n = static_cast<int>(std::min(kRows, r1 - c0));
      im2col(pe.images, pe.chans, pe.height, pe.width, pe.patch, rows_f32, c0, c0 + n);
      if (pe.norm_w)
        e.f32->layernorm(rows_f32, cols, rows_f32, cols, n, cols, pe.norm_w, pe.norm_b, pe.eps);
      if (proj.w16.data())
        e.bf16->to_bf16(rows_f32, cols, op.a16 + c0 * proj.kp, proj.kp, n, cols, proj.kp);
      else
        e.int8->quantize(rows_f32, cols, op.a8 + c0 * proj.kp, proj.kp, op.scale + c0,
                         op.zero + c0, n, cols, proj.kp);
    }
    barrier();
    linear_prepared(e, proj, rows, pe.out, nullptr, proj.n, Epilogue::Bias, nullptr, 0, op,
                    team);
    return;
  }
  im2col(pe.images, pe.chans, pe.height, pe.width, pe.patch, pe.patches + r0 * cols, r0, r1);
  if (pe.norm_w && r0 < r1)
    e.f32->layernorm(pe.patches + r0 * cols, cols, pe.patches + r0 * cols, cols,
                     static_cast<int>(r1 - r0), cols, pe.norm_w, pe.norm_b, pe.eps);
  barrier();
  linear(e, proj, pe.patches, cols, rows, pe.out, proj.n, Epilogue::Bias, nullptr, 0, op, team);
}

}  // namespace polyvit::cpu
