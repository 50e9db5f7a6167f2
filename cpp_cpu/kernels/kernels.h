// kernels.h — the per-ISA kernels and the table that picks one set at run time.
//
// Each kernel file (linear_f32.cpp, layernorm.cpp, ...) is compiled once per instruction set
// into namespace polyvit::cpu::<isa>; dispatch.cpp fills one Kernels table per ISA. Kernels
// compute a given slice of the work; the drivers (ops.cpp, model.cpp) split work over threads.
#pragma once

#include <cstdint>

namespace polyvit::cpu {

// What a GEMM does with each output element after the dot product (bias is always added).
enum class Epilogue : int { Bias = 0, GeluErf = 1, GeluTanh = 2, Residual = 3 };

// C = epilogue(A @ B^T + bias): A (M, K) rows of activations, B (N, K) weights packed into
// panels of `nr` columns (see pack.cpp).
struct GemmF32 {
  const float* a; long lda;    // (M, K)
  const float* b;              // (ceil(N / nr), K, nr) packed, zero-padded columns
  const float* bias;           // (N,)
  float* c; long ldc;          // (M, N)
  const float* r; long ldr;    // (M, N) residual for Epilogue::Residual; may alias c
  int m, n, k;
  Epilogue epi;
};

// bf16: A (M, Kp) bf16 bit patterns, B packed in pairs of k: (panels, Kp / 2, nr, 2).
struct GemmBf16 {
  const uint16_t* a; long lda;  // (M, Kp), Kp = K rounded up to 2, zero-padded
  const uint16_t* b;            // (ceil(N / nr), Kp / 2, nr, 2)
  const float* bias;            // (N,)
  float* c; long ldc;           // (M, N) fp32 output ...
  uint16_t* c16;                // ... or bf16 output (M, N) with stride ldc when set
  const float* r; long ldr;
  int m, n, kp;
  Epilogue epi;
};

// int8: A quantised per row as u8 with scale and zero point (a = scale * (q - zero)); B
// quantised per output column, packed in quads of k: (panels, Kp / 4, nr, 4) int8.
struct GemmInt8 {
  const uint8_t* a; long lda;   // (M, Kp), Kp = K rounded up to 4
  const float* a_scale;         // (M,)
  const int32_t* a_zero;        // (M,)
  const int8_t* b;              // (ceil(N / nr), Kp / 4, nr, 4)
  const float* b_scale;         // (N,)
  const int32_t* b_sum;         // (N,) sum over k of each column, for the zero-point term
  const float* bias;            // (N,)
  float* c; long ldc;           // (M, N)
  const float* r; long ldr;
  int m, n, kp;
  Epilogue epi;
};

// Attention over packed q|k|v: for each (b, h), out = softmax(q k^T / sqrt(hd)) v, for the
// first `queries` query rows of each sequence (all T, or just the class token).
struct Attention {
  const float* qkv;  // (B, T, 3D)
  float* out;        // (B, T, D)
  float* kt;         // (B, H, hd, tp) keys transposed, columns zero-padded to tp
  int batch, tokens, dim, heads, tp, queries;
  float* probs = nullptr;    // (B, H, queries, T): the probabilities too, when set (attention maps)
  // the bf16 form (attention_bf16.cpp), hdp = hd rounded up to even:
  uint16_t* kt16 = nullptr;  // (B, H, hdp / 2, tp, 2) keys, pairs of d interleaved
  uint16_t* v16 = nullptr;   // (B, H, tp / 2, hdp, 2) values, pairs of tokens interleaved
  uint16_t* out16 = nullptr; // (B * T, ldo16) bf16 output rows instead of out
  long ldo16 = 0;
};

struct Kernels {
  const char* isa;
  int nr;  // columns per packed fp32 weight panel
  // C[m0:m1, panel p0:p1] of one fp32 linear
  void (*linear_f32)(const GemmF32&, int m0, int m1, int p0, int p1);
  // y[i] = layernorm(x[i]) for rows [0, rows) of width c
  void (*layernorm)(const float* x, long ldx, float* y, long ldy, int rows, int c,
                    const float* w, const float* b, float eps);
  // kt of the (b, h) pairs [u0, u1), numbered b * H + h
  void (*attention_keys)(const Attention&, int u0, int u1);
  // output rows of the (b, h, query block) units [u0, u1); scratch: attention_scratch floats
  void (*attention_rows)(const Attention&, int u0, int u1, float* scratch);
  int attention_block;  // query rows per unit
  // y = gelu(x + bias) over rows [0, rows) of width n; form 0 erf, 1 tanh
  void (*bias_gelu)(const float* x, float* y, long ld, int rows, int n, const float* bias,
                    int form);
};

// bf16 kernels exist only for the instruction set that has its dot products (AVX512_BF16).
struct KernelsBf16 {
  int nr;
  void (*linear)(const GemmBf16&, int m0, int m1, int p0, int p1);
  void (*to_bf16)(const float* x, long ldx, uint16_t* y, long ldy, int rows, int c, int cp);
  // layernorm with bf16 output rows (the next GEMM's operand), zero-padded to cp columns
  void (*layernorm)(const float* x, long ldx, uint16_t* y, long ldy, int rows, int c, int cp,
                    const float* w, const float* b, float eps);
  // attention with bf16 dot products and bf16 output (Attention::kt16, v16, out16)
  void (*attention_keys)(const Attention&, int u0, int u1);
  void (*attention_rows)(const Attention&, int u0, int u1, float* scratch);
  int attention_block;
};

// int8 kernels exist for every fp32 set: vpdpbusd (avx512_vnni), its exact AVX2 equivalent and
// portable C++, all giving the same int32 sums and the same fp32 epilogue arithmetic.
struct KernelsInt8 {
  const char* isa;  // "avx512_vnni", "avx2" or "generic"
  int nr;
  void (*linear)(const GemmInt8&, int m0, int m1, int p0, int p1);
  // per-row asymmetric u8 quantisation of x (rows, c) into q (rows, cp); the padding columns
  // hold the zero point (the quantised 0)
  void (*quantize)(const float* x, long ldx, uint8_t* q, long ldq, float* scale,
                   int32_t* zero, int rows, int c, int cp);
};

// Floats of per-thread scratch attention_rows needs for blocks of `block` queries, tp padded
// keys and head dim hd (either form).
inline long attention_scratch(int block, int tp, int hd) {
  return static_cast<long>(block) * (2 * tp + hd + 1);
}

#define POLYVIT_DECLARE_KERNELS(ns)                                                          \
  namespace ns {                                                                             \
  extern const int linear_f32_nr;                                                            \
  void linear_f32(const GemmF32&, int, int, int, int);                                       \
  void layernorm(const float*, long, float*, long, int, int, const float*, const float*,     \
                 float);                                                                     \
  extern const int attention_block;                                                          \
  void attention_keys(const Attention&, int, int);                                           \
  void attention_rows(const Attention&, int, int, float*);                                   \
  void bias_gelu(const float*, float*, long, int, int, const float*, int);                   \
  }
#define POLYVIT_DECLARE_INT8_KERNELS(ns)                                                     \
  namespace ns {                                                                             \
  extern const int linear_int8_nr;                                                           \
  void linear_int8(const GemmInt8&, int, int, int, int);                                     \
  void quantize(const float*, long, uint8_t*, long, float*, int32_t*, int, int, int);        \
  }
POLYVIT_DECLARE_KERNELS(generic)
POLYVIT_DECLARE_INT8_KERNELS(generic)
#if defined(POLYVIT_X86)
POLYVIT_DECLARE_KERNELS(avx2)
POLYVIT_DECLARE_INT8_KERNELS(avx2)
POLYVIT_DECLARE_KERNELS(avx512)
namespace avx512_bf16 {
extern const int linear_bf16_nr;
void linear_bf16(const GemmBf16&, int, int, int, int);
void to_bf16(const float*, long, uint16_t*, long, int, int, int);
void layernorm_bf16(const float*, long, uint16_t*, long, int, int, int, const float*,
                    const float*, float);
extern const int attention_bf16_block;
void attention_bf16_keys(const Attention&, int, int);
void attention_bf16_rows(const Attention&, int, int, float*);
}  // namespace avx512_bf16
POLYVIT_DECLARE_INT8_KERNELS(avx512_vnni)
#endif
#undef POLYVIT_DECLARE_KERNELS
#undef POLYVIT_DECLARE_INT8_KERNELS

// The kernels for an ISA name ("auto", "avx512", "avx2", "generic"), or nullptr with the
// reason in *why when this CPU cannot run it.
const Kernels* kernels_for(const char* isa, const char** why);
const KernelsBf16* kernels_bf16(const char** why);
// The int8 kernels to run beside the fp32 set f32 (never null: every set has them): the VNNI
// ones with avx512 on a CPU with AVX512_VNNI, else the AVX2 ones with avx512 or avx2, else the
// portable ones.
const KernelsInt8* kernels_int8(const Kernels& f32);
// "avx512 avx2 generic": the ISAs this CPU runs, best first
const char* cpu_isas();
bool cpu_has(const char* feature);

}  // namespace polyvit::cpu
