// linear.cpp — one linear layer in its packed precision: convert the activations to the
// kernel's operand type if needed (split over the team), then the GEMM.
#include "linear.h"

#include "ops.h"

namespace polyvit::cpu {

void linear(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
            long ldc, Epilogue epi, const float* r, long ldr, const Operand& op, Team team) {
  if (l.w32.data()) {
    gemm_f32(*e.f32, GemmF32{x, ldx, l.w32.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.k,
                             epi}, team);
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
    gemm_bf16(*e.bf16, GemmBf16{op.a16, l.kp, l.w16.data(), l.bias.data(), c, ldc, c16, r, ldr,
                                m, l.n, l.kp, epi}, team);
  else
    gemm_int8(*e.int8, GemmInt8{op.a8, l.kp, op.scale, op.zero, l.w8.data(), l.scale.data(),
                                l.sum.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.kp, epi},
              team);
}

}  // namespace polyvit::cpu
