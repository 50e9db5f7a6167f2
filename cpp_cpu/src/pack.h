// pack.h — weights of one linear layer, packed once at load into the micro-kernel's layout.
#pragma once

#include <cstdint>

#include "buffer.h"

namespace polyvit::cpu {

enum class Precision { F32, BF16, INT8 };

struct Linear {
  int n = 0, k = 0;          // out features, in features
  int nr = 0;                // columns per panel of the precision's kernel
  int kp = 0;                // k rounded up to the kernel's group (1 fp32, 2 bf16, 4 int8)
  Buffer<float> bias;        // (N,), zeros when the layer has none
  Buffer<float> w32;         // fp32: (ceil(N / nr), K, nr)
  Buffer<uint16_t> w16;      // bf16: (ceil(N / nr), Kp / 2, nr, 2)
  Buffer<int8_t> w8;         // int8: (ceil(N / nr), Kp / 4, nr, 4)
  Buffer<float> scale;       // int8: (N,) per output channel, w = scale * q
  Buffer<int32_t> sum;       // int8: (N,) sum of q over k
  int panels() const { return (n + nr - 1) / nr; }
};

// w (N, K) row-major in torch's (out, in) layout; bias (N,) or nullptr.
Linear pack_linear(const float* w, const float* bias, int n, int k, Precision precision, int nr);

// Round to nearest even, as vcvtneps2bf16 does (weights are finite: no NaN handling needed).
inline uint16_t to_bf16(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, sizeof u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace polyvit::cpu
