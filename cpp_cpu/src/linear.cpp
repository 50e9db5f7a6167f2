// linear.cpp — one linear layer in its packed precision: convert the activations to the
// kernel's operand type if needed (split over the team), then the GEMM.
#include "linear.h"

#include "ops.h"

namespace polyvit::cpu {

void linear(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
            long ldc, Epilogue epi, const float* r, long ldr, const Operand& op, Team team) {
  long r0, r1;
  if (l.w32.data()) {
    gemm_f32(*e.f32, GemmF32{x, ldx, l.w32.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.k,
                             epi}, team);
  } else if (l.w16.data()) {
    team.split(m, &r0, &r1);
    if (r0 < r1) e.bf16->to_bf16(x + r0 * ldx, ldx, op.a16 + r0 * l.kp, l.kp,
                                 static_cast<int>(r1 - r0), l.k, l.kp);
    barrier();
    gemm_bf16(*e.bf16, GemmBf16{op.a16, l.kp, l.w16.data(), l.bias.data(), c, ldc, nullptr, r,
                                ldr, m, l.n, l.kp, epi}, team);
  } else {
    team.split(m, &r0, &r1);
    if (r0 < r1) e.int8->quantize(x + r0 * ldx, ldx, op.a8 + r0 * l.kp, l.kp, op.scale + r0,
                                  op.zero + r0, static_cast<int>(r1 - r0), l.k, l.kp);
    barrier();
    gemm_int8(*e.int8, GemmInt8{op.a8, l.kp, op.scale, op.zero, l.w8.data(), l.scale.data(),
                                l.sum.data(), l.bias.data(), c, ldc, r, ldr, m, l.n, l.kp, epi},
              team);
  }
}

}  // namespace polyvit::cpu
