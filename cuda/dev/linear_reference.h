// What both linear dev programs validate against: the CPU reference of
// out (M, N) = epilogue(a (M, K) @ w (N, K)^T + bias), its error bound, and the tail shapes.
#pragma once

#include <tuple>

#include "common.h"

namespace dev {

using polyvit_cuda::Epilogue;

struct LinearReference {
  std::vector<double> want;   // the first rows of out, in float64
  std::vector<double> bound;  // what an fp32-accumulating kernel may be off by, per output
};

// Inputs rounded to T as the device rounds them, so what remains is fp32 accumulation: at most
// about (K + 8) * 2^-23 * (sum_k |a w| + |bias| + |out|) per output (the gamma_K bound, with room
// for the epilogue's few ulp). Large problems are checked on their first rows: every tile
// column, in seconds rather than minutes of CPU time.
template <class T>
LinearReference linear_reference(const std::vector<float>& a, const std::vector<float>& w,
                                 const std::vector<float>& bias, const std::vector<float>& residual,
                                 int M, int N, int K, Epilogue epilogue) {
  const int rows = static_cast<int>(std::min<long long>(M, std::max(1LL, 2000000000LL / (1LL * N * K))));
  LinearReference r{std::vector<double>(size_t(rows) * N), std::vector<double>(size_t(rows) * N)};
  for (int m = 0; m < rows; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = 0.0, magnitude = 0.0;
      for (int k = 0; k < K; ++k) {
        const double p = double(round_to(a[size_t(m) * K + k], T{})) * round_to(w[size_t(n) * K + k], T{});
        acc += p;
        magnitude += std::fabs(p);
      }
      double v = acc + bias[n];
      if (epilogue == Epilogue::kGeluErf) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
      if (epilogue == Epilogue::kGeluTanh)
        v = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
      if (epilogue == Epilogue::kResidual) v += residual[size_t(m) * N + n];
      r.want[size_t(m) * N + n] = v;
      r.bound[size_t(m) * N + n] = (K + 8) * 1.2e-7 * (magnitude + std::fabs(bias[n]) + std::fabs(v)) + 1e-6;
    }
  return r;
}

// The promoted kernel on sizes that are multiples of no tile, with K % 8 != 0 among them (the
// element-wise load path of the tensor-core kernel). run(a, w, bias, residual, out, M, N, K)
// launches it with the residual epilogue on device arrays.
template <class T, class Run>
bool check_tails(const char* name, Run run) {
  bool ok = true;
  for (const auto& [m, k, n] : std::vector<std::tuple<int, int, int>>{{33, 100, 37}, {1, 7, 5}, {5, 1, 3},
                                                                      {65, 17, 129}, {129, 72, 200}}) {
    const auto a = random_vector(size_t(m) * k, 5), w = random_vector(size_t(n) * k, 6);
    const auto bias = random_vector(n, 7), residual = random_vector(size_t(m) * n, 8);
    const LinearReference r = linear_reference<T>(a, w, bias, residual, m, n, k, Epilogue::kResidual);
    DeviceArray<T> da(convert<T>(a)), dw(convert<T>(w));
    DeviceArray<float> db(bias), dr(residual), dout(size_t(m) * n);
    run(da.get(), dw.get(), db.get(), dr.get(), dout.get(), m, n, k);
    ok &= validate(std::string(name) + " tail " + std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n),
                   dout.download(), r.want, r.bound);
  }
  return ok;
}

}  // namespace dev
