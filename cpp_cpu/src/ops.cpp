// ops.cpp — splitting each op's work over the threads of a team.
#include "ops.h"

namespace polyvit::cpu {

GemmPart gemm_part(int rows, int panels, int mr, Team team) {
  // Pick tn x tm = team.size minimising the largest share (in panels x row tiles); ties go to
  // more column groups.
  const int tiles = (rows + mr - 1) / mr;
  int best_tn = 1;
  long best = -1;
  for (int tn = 1; tn <= team.size; ++tn) {
    if (team.size % tn) continue;
    const int tm = team.size / tn;
    const long cost = static_cast<long>((panels + tn - 1) / tn) * ((tiles + tm - 1) / tm);
    if (best < 0 || cost <= best) {
      best = cost;
      best_tn = tn;
    }
  }
  const int tm = team.size / best_tn, gi = team.id % best_tn, gm = team.id / best_tn;
  GemmPart part;
  part.p0 = static_cast<int>(static_cast<long>(panels) * gi / best_tn);
  part.p1 = static_cast<int>(static_cast<long>(panels) * (gi + 1) / best_tn);
  // row boundaries on whole tiles, so every group tiles its rows the same way
  part.m0 = static_cast<int>(static_cast<long>(tiles) * gm / tm) * mr;
  part.m1 = static_cast<int>(static_cast<long>(tiles) * (gm + 1) / tm) * mr;
  if (part.m1 > rows) part.m1 = rows;
  if (part.m0 > rows) part.m0 = rows;
  return part;
}

void gemm_f32(const Kernels& k, const GemmF32& g, Team team) {
  const GemmPart p = gemm_part(g.m, (g.n + k.nr - 1) / k.nr, 16, team);
  if (p.m0 < p.m1 && p.p0 < p.p1) k.gemm_f32(g, p.m0, p.m1, p.p0, p.p1);
}

void gemm_bf16(const KernelsBf16& k, const GemmBf16& g, Team team) {
  const GemmPart p = gemm_part(g.m, (g.n + k.nr - 1) / k.nr, 16, team);
  if (p.m0 < p.m1 && p.p0 < p.p1) k.gemm(g, p.m0, p.m1, p.p0, p.p1);
}

void gemm_int8(const KernelsInt8& k, const GemmInt8& g, Team team) {
  const GemmPart p = gemm_part(g.m, (g.n + k.nr - 1) / k.nr, 16, team);
  if (p.m0 < p.m1 && p.p0 < p.p1) k.gemm(g, p.m0, p.m1, p.p0, p.p1);
}

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

}  // namespace polyvit::cpu
