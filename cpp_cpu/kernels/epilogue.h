// epilogue.h — what every GEMM kernel does to a finished tile of accumulators: add the bias,
// apply GELU or add the residual, store the valid columns. Included by the linear_*.cpp kernel
// files (anonymous namespace: each ISA keeps its own copy).
#pragma once

#include "kernels.h"
#include "simd.h"

namespace {

inline V epilogue_value(polyvit::cpu::Epilogue epi, V x, const float* r, int n) {
  using polyvit::cpu::Epilogue;
  switch (epi) {
    case Epilogue::GeluErf: return gelu_erf(x);
    case Epilogue::GeluTanh: return gelu_tanh(x);
    case Epilogue::Residual: return add(x, n == W ? load(r) : load_n(r, n));
    default: return x;
  }
}

// value(i, j) gives the dot products of row i, vector j of a tile (M rows x NV vectors) whose
// first ncols columns are real; bias and r (row stride ldr, or nullptr) start at the tile's
// first column. store(i, j, y, n) writes vector j of row i, n valid lanes.
template <int M, int NV, class Value, class Store>
inline void finish_tile(Value&& value, polyvit::cpu::Epilogue epi, const float* bias, int ncols,
                        const float* r, long ldr, Store&& store) {
  V b[NV];
  int cols[NV];
#pragma GCC unroll 8
  for (int j = 0; j < NV; ++j) {
    cols[j] = imax(0, imin(W, ncols - j * W));
    b[j] = cols[j] == W ? load(bias + j * W) : load_n(bias + j * W, cols[j]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      if (cols[j] == 0) continue;
      const float* rij = r ? r + i * ldr + j * W : nullptr;
      store(i, j, epilogue_value(epi, add(value(i, j), b[j]), rij, cols[j]), cols[j]);
    }
}

}  // namespace
