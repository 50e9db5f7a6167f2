// linear.h — the linear op: y = epilogue(x @ W^T + b) for a packed layer of any precision,
// inside a team; and the kernels of a precision (Engine) it runs with.
#pragma once

#include <stdexcept>
#include <string>

#include "buffer.h"
#include "kernels.h"
#include "pack.h"
#include "parallel.h"

namespace polyvit::cpu {

// A precision or ISA this CPU cannot run: becomes polyvit.BackendError in Python.
struct Unsupported : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The kernels of every precision a model may use (bf16/int8 null when not needed).
struct Engine {
  const Kernels* f32 = nullptr;
  const KernelsBf16* bf16 = nullptr;
  const KernelsInt8* int8 = nullptr;
  // columns per packed weight panel of the precision's linear kernel
  int nr(Precision p) const {
    return p == Precision::F32 ? f32->nr : p == Precision::BF16 ? bf16->nr : int8->nr;
  }
};

// The kernels for `precision` with the fp32 kernel set named by isa ("auto", "avx512",
// "avx2", "generic"); Unsupported naming what this CPU lacks. bf16 runs only with the avx512
// set (its kernels need AVX512_BF16); int8 with every set (kernels_int8 picks its tiles).
Engine engine_for(Precision precision, const std::string& isa);

// Scratch for the reduced-precision A operand: (rows, kp) of the layer's kind.
struct Operand {
  uint16_t* a16 = nullptr;   // bf16 rows
  uint8_t* a8 = nullptr;     // u8 rows
  float* scale = nullptr;    // (rows,)
  int32_t* zero = nullptr;   // (rows,)
};

// Owns an Operand's buffers for `rows` rows of `kp` columns of the engine's precision.
struct OperandBuffers {
  Buffer<uint16_t> a16;  // (rows, kp)
  Buffer<uint8_t> a8;    // (rows, kp)
  Buffer<float> scale;   // (rows,)
  Buffer<int32_t> zero;  // (rows,)
  Operand reserve(const Engine& e, long rows, long kp);
};

// x (m, K) fp32 rows at stride ldx -> c (m, N) fp32 at stride ldc; r is the residual for
// Epilogue::Residual (may alias c). bf16 and int8 layers first convert x into op (a barrier
// inside), so every thread of the team must call this.
void linear(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
            long ldc, Epilogue epi, const float* r, long ldr, const Operand& op, Team team);

// The same with the operand already in op (m rows at stride l.kp, written by the producer in
// the layer's type). A bf16 layer may write bf16 c16 instead of c (c = nullptr).
void linear_prepared(const Engine& e, const Linear& l, int m, float* c, uint16_t* c16, long ldc,
                     Epilogue epi, const float* r, long ldr, const Operand& op, Team team);

// linear on the calling thread alone, no barrier: for work a team splits by rows (the fused
// MLP). bf16 and int8 layers first convert the m rows of x into op, unless x is null (op
// already holds them); c16 as in linear_prepared.
void linear_alone(const Engine& e, const Linear& l, const float* x, long ldx, int m, float* c,
                  uint16_t* c16, long ldc, Epilogue epi, const float* r, long ldr,
                  const Operand& op);

}  // namespace polyvit::cpu
