// linear.cpp — the linear op's driver: convert the activations to the kernel's operand type
// if needed (split over the team), then the tiles of the precision (kernels/linear_*.cpp) on
// this thread's block of rows and weight panels.
#include "linear.h"

namespace polyvit::cpu {

// ---- kernels of a precision --------------------------------------------------------------------

Engine engine_for(Precision precision, const std::string& isa) {
  Engine e;
  const char* why = nullptr;
  if (!(e.f32 = kernels_for(isa.c_str(), &why))) throw Unsupported("isa '" + isa + "': " + why);
  if (precision == Precision::BF16) {
    if (!(e.bf16 = kernels_bf16(&why))) throw Unsupported(why);
    if (std::string(e.f32->isa) != "avx512")
      throw Unsupported("bf16 runs with the avx512 kernels; isa '" + isa + "' selects '" +
                        std::string(e.f32->isa) + "': use isa='auto' or 'avx512'");
  }
  if (precision == Precision::INT8) e.int8 = kernels_int8(*e.f32);
  return e;
}

Operand OperandBuffers::reserve(const Engine& e, long rows, long kp) {
  if (e.bf16) a16.reserve(rows * kp);
  if (e.int8) {
    a8.reserve(rows * kp);
    scale.reserve(rows);
    zero.reserve(rows);
  }
  return Operand{a16.data(), a8.data(), scale.data(), zero.data()};
}

// ---- splitting the tiles over the team ---------------------------------------------------------

namespace {

// This thread's block of a GEMM with `rows` rows and `panels` column panels: threads form a
// grid over (rows, panels), panels first, which at batch 1 (50 rows) splits the weights rather
// than the few rows, so each thread streams only its part of the weights.
struct Part { int m0, m1, p0, p1; };

Part part_of(int rows, int panels, int mr, Team team) {
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
  Part part;
  part.p0 = static_cast<int>(static_cast<long>(panels) * gi / best_tn);
  part.p1 = static_cast<int>(static_cast<long>(panels) * (gi + 1) / best_tn);
  // row boundaries on whole tiles, so every group tiles its rows the same way
  part.m0 = static_cast<int>(static_cast<long>(tiles) * gm / tm) * mr;
  part.m1 = static_cast<int>(static_cast<long>(tiles) * (gm + 1) / tm) * mr;
  if (part.m1 > rows) part.m1 = rows;
  if (part.m0 > rows) part.m0 = rows;
  return part;
}

template <class Gemm, class Fn>
void run_tiles(Fn fn, int nr, const Gemm& g, Team team) {
  const Part p = part_of(g.m, (g.n + nr - 1) / nr, 16, team);
  if (p.m0 < p.m1 && p.p0 < p.p1) fn(g, p.m0, p.m1, p.p0, p.p1);
}

}  // namespace

// ---- linear ------------------------------------------------------------------------------------

void linear(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
            long ldc, Epilogue epi, const float* r, long ldr, const Operand& op, Team team) {
  if (l.w32.data()) {
    run_tiles(e.f32->linear_f32, e.f32->nr,
              GemmF32{x, ldx, l.w32.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.k, epi},
              team);
    return;
  }
  long r0, r1;
  team.split(m, &r0, &r1);
  const int rows = static_cast<int>(r1 - r0);
  if (rows > 0 && l.w16.data())
    e.bf16->to_bf16(x + r0 * ldx, ldx, op.a16 + r0 * l.kp, l.kp, rows, l.k, l.kp);
  else if (rows > 0)
    e.int8->quantize(x + r0 * ldx, ldx, op.a8 + r0 * l.kp, l.kp, op.scale + r0, op.zero + r0,
                     rows, l.k, l.kp);
  barrier();
  linear_prepared(e, l, m, c, nullptr, ldc, epi, r, ldr, op, team);
}

void linear_prepared(const Engine& e, const Linear& l, int m, float* c, uint16_t* c16, long ldc,
                     Epilogue epi, const float* r, long ldr, const Operand& op, Team team) {
  if (l.w16.data())
    run_tiles(e.bf16->linear, e.bf16->nr,
              GemmBf16{op.a16, l.kp, l.w16.data(), l.bias.data(), c, ldc, c16, r, ldr, m, l.n,
                       l.kp, epi},
              team);
  else
    run_tiles(e.int8->linear, e.int8->nr,
              GemmInt8{op.a8, l.kp, op.scale, op.zero, l.w8.data(), l.scale.data(),
                       l.sum.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.kp, epi},
              team);
}

void linear_alone(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
                  uint16_t* c16, long ldc, Epilogue epi, const float* r, long ldr,
                  const Operand& op) {
  const Team alone{0, 1};
  if (l.w32.data()) {
    run_tiles(e.f32->linear_f32, e.f32->nr,
              GemmF32{x, ldx, l.w32.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.k, epi},
              alone);
    return;
  }
  if (x && l.w16.data()) e.bf16->to_bf16(x, ldx, op.a16, l.kp, m, l.k, l.kp);
  else if (x) e.int8->quantize(x, ldx, op.a8, l.kp, op.scale, op.zero, m, l.k, l.kp);
  linear_prepared(e, l, m, c, c16, ldc, epi, r, ldr, op, alone);
}

}  // namespace polyvit::cpu
