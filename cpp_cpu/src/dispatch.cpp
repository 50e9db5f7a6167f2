// dispatch.cpp — which kernels this CPU runs, decided once at run time.
#include <cstring>

#include "kernels.h"

namespace polyvit::cpu {
namespace {

#define POLYVIT_KERNELS(ns)                                                                  \
  Kernels{#ns, ns::linear_f32_nr, ns::linear_f32, ns::layernorm, ns::attention_keys,         \
          ns::attention_rows, ns::attention_block, ns::bias_gelu}

#define POLYVIT_INT8_KERNELS(ns) \
  KernelsInt8{#ns, ns::linear_int8_nr, ns::linear_int8, ns::quantize}

const Kernels kGeneric = POLYVIT_KERNELS(generic);
const KernelsInt8 kInt8Generic = POLYVIT_INT8_KERNELS(generic);
#if defined(POLYVIT_X86)
const Kernels kAvx2 = POLYVIT_KERNELS(avx2);
const Kernels kAvx512 = POLYVIT_KERNELS(avx512);
const KernelsBf16 kBf16{avx512_bf16::linear_bf16_nr,       avx512_bf16::linear_bf16,
                        avx512_bf16::to_bf16,              avx512_bf16::layernorm_bf16,
                        avx512_bf16::attention_bf16_keys,  avx512_bf16::attention_bf16_rows,
                        avx512_bf16::attention_bf16_block};
const KernelsInt8 kInt8Avx2 = POLYVIT_INT8_KERNELS(avx2);
const KernelsInt8 kInt8Vnni = POLYVIT_INT8_KERNELS(avx512_vnni);
#endif

bool has_avx2() {
#if defined(POLYVIT_X86)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// The kernels use F (foundation), BW/DQ/VL (byte and 256-bit forms) together.
bool has_avx512() {
#if defined(POLYVIT_X86)
  return has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

bool has_bf16() {
#if defined(POLYVIT_X86)
  return has_avx512() && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

bool has_vnni() {
#if defined(POLYVIT_X86)
  return has_avx512() && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

}  // namespace

bool cpu_has(const char* feature) {
  if (!std::strcmp(feature, "avx2")) return has_avx2();
  if (!std::strcmp(feature, "avx512")) return has_avx512();
  if (!std::strcmp(feature, "avx512_bf16")) return has_bf16();
  if (!std::strcmp(feature, "avx512_vnni")) return has_vnni();
  return false;
}

const char* cpu_isas() {
  return has_avx512() ? "avx512 avx2 generic" : has_avx2() ? "avx2 generic" : "generic";
}

const Kernels* kernels_for(const char* isa, const char** why) {
  *why = nullptr;
#if defined(POLYVIT_X86)
  const bool is_auto = !std::strcmp(isa, "auto");
  if (is_auto || !std::strcmp(isa, "avx512")) {
    if (has_avx512()) return &kAvx512;
    if (!is_auto) {
      *why = "this CPU lacks AVX-512 (F, BW, DQ, VL)";
      return nullptr;
    }
  }
  if (is_auto || !std::strcmp(isa, "avx2")) {
    if (has_avx2()) return &kAvx2;
    if (!is_auto) {
      *why = "this CPU lacks AVX2 and FMA";
      return nullptr;
    }
  }
  if (is_auto || !std::strcmp(isa, "generic")) return &kGeneric;
#else
  if (!std::strcmp(isa, "auto") || !std::strcmp(isa, "generic")) return &kGeneric;
  if (!std::strcmp(isa, "avx512") || !std::strcmp(isa, "avx2")) {
    *why = "this build is not for x86-64";
    return nullptr;
  }
#endif
  *why = "unknown isa; choose auto, avx512, avx2 or generic";
  return nullptr;
}

const KernelsBf16* kernels_bf16(const char** why) {
  *why = nullptr;
#if defined(POLYVIT_X86)
  if (has_bf16()) return &kBf16;
#endif
  *why = "bf16 needs a CPU with AVX512_BF16 (vdpbf16ps), e.g. AMD Zen 4 or Intel Sapphire "
         "Rapids; this CPU lacks it: use precision='fp32'";
  return nullptr;
}

const KernelsInt8* kernels_int8(const Kernels& f32) {
#if defined(POLYVIT_X86)
  // An AVX-512 CPU without VNNI (Skylake-SP/X; VNNI came with Cascade Lake) still has AVX2:
  // its int8 runs the AVX2 tiles, which compute the same sums, beside the avx512 fp32 kernels.
  if (!std::strcmp(f32.isa, "avx512")) return has_vnni() ? &kInt8Vnni : &kInt8Avx2;
  if (!std::strcmp(f32.isa, "avx2")) return &kInt8Avx2;
#endif
  return &kInt8Generic;
}

}  // namespace polyvit::cpu
