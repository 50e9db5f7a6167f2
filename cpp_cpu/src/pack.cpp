// pack.cpp — weight packing: panels of nr output columns, k-major, zero-padded.
//
// fp32 panel p holds w[p*nr + j][k] at (k, j); bf16 interleaves pairs of k per column
// ((k/2, j, k%2): one 32-bit lane of vdpbf16ps); int8 interleaves quads ((k/4, j, k%4): one
// lane of vpdpbusd). Padded columns and k are zero, so kernels never test bounds in the loop.
#include "pack.h"

#include <cmath>
#include <cstring>

namespace polyvit::cpu {

Linear pack_linear(const float* w, const float* bias, int n, int k, Precision precision,
                   int nr) {
  Linear l;
  l.n = n;
  l.k = k;
  l.nr = nr;
  const int group = precision == Precision::F32 ? 1 : precision == Precision::BF16 ? 2 : 4;
  l.kp = (k + group - 1) / group * group;
  const long panels = l.panels(), cells = panels * l.kp * nr;  // padded weight count

  l.bias.reserve(n);
  for (int j = 0; j < n; ++j) l.bias.data()[j] = bias ? bias[j] : 0.0f;

  switch (precision) {
    case Precision::F32: {
      l.w32.reserve(cells);
      float* out = l.w32.data();
      std::memset(out, 0, cells * sizeof(float));
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < k; ++i)
          out[(j / nr) * static_cast<long>(k) * nr + static_cast<long>(i) * nr + j % nr] =
              w[static_cast<long>(j) * k + i];
      break;
    }
    case Precision::BF16: {
      l.w16.reserve(cells);
      uint16_t* out = l.w16.data();
      std::memset(out, 0, cells * sizeof(uint16_t));
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < k; ++i)
          out[(j / nr) * static_cast<long>(l.kp) * nr + (i / 2) * 2L * nr + (j % nr) * 2 + i % 2] =
              to_bf16(w[static_cast<long>(j) * k + i]);
      break;
    }
    case Precision::INT8: {
      // symmetric per output channel: the weights of a row share one scale
      l.w8.reserve(cells);
      l.scale.reserve(n);
      l.sum.reserve(n);
      int8_t* out = l.w8.data();
      std::memset(out, 0, cells);
      for (int j = 0; j < n; ++j) {
        const float* row = w + static_cast<long>(j) * k;
        float amax = 0.0f;
        for (int i = 0; i < k; ++i) amax = std::fmax(amax, std::fabs(row[i]));
        const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
        int32_t sum = 0;
        for (int i = 0; i < k; ++i) {
          const int q = static_cast<int>(std::nearbyint(row[i] / scale));
          const int8_t c = static_cast<int8_t>(q < -127 ? -127 : q > 127 ? 127 : q);
          out[(j / nr) * static_cast<long>(l.kp) * nr + (i / 4) * 4L * nr + (j % nr) * 4 + i % 4] = c;
          sum += c;
        }
        l.scale.data()[j] = scale;
        l.sum.data()[j] = sum;
      }
      break;
    }
  }
  return l;
}

}  // namespace polyvit::cpu
