// Shared by the dev programs: device arrays, random inputs, validation against a CPU reference,
// and event timing. Each dev/<op>.cu validates every variant first, then times it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "types.h"

namespace dev {

using polyvit_cuda::bf16;
using polyvit_cuda::fp16;

// ---- data ----------------------------------------------------------------------------------------

inline std::vector<float> random_vector(size_t n, unsigned seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = offset + scale * normal(rng);
  return v;
}

// Host-side rounding, the same round-to-nearest-even as the device's casts.
inline float round_to(float x, bf16) { return __bfloat162float(__float2bfloat16_rn(x)); }
inline float round_to(float x, fp16) { return __half2float(__float2half_rn(x)); }
inline float round_to(float x, float) { return x; }

template <class T>
inline std::vector<T> convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) out[i] = v[i];
    else if constexpr (std::is_same_v<T, bf16>) out[i] = __float2bfloat16_rn(v[i]);
    else out[i] = __float2half_rn(v[i]);
  }
  return out;
}

inline float to_host_float(float x) { return x; }
inline float to_host_float(bf16 x) { return __bfloat162float(x); }
inline float to_host_float(fp16 x) { return __half2float(x); }

// A device array of n elements of T, freed on scope exit.
template <class T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return ptr_; }
  std::vector<float> download() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> out(n_);
    for (size_t i = 0; i < n_; ++i) out[i] = to_host_float(host[i]);
    return out;
  }
  void zero() { CUDA_CHECK(cudaMemset(ptr_, 0, n_ * sizeof(T))); }

 private:
  T* ptr_ = nullptr;
  size_t n_;
};

// ---- validation ----------------------------------------------------------------------------------

// Passes when |got - want| <= bound[i] everywhere (bound: the error analysis of each program).
inline bool validate(const std::string& name, const std::vector<float>& got, const std::vector<double>& want,
                     const std::vector<double>& bound) {
  double worst = 0.0, worst_err = 0.0;
  size_t worst_i = 0, bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double ratio = !std::isfinite(err) ? INFINITY : err == 0.0 ? 0.0 : err / bound[i];
    if (ratio > 1.0) ++bad;
    if (ratio > worst || !std::isfinite(ratio)) {
      worst = ratio;
      worst_err = err;
      worst_i = i;
    }
  }
  std::printf("  %-34s %s  max err/bound %.3g (err %.3g at %zu: got %.7g, want %.7g)\n", name.c_str(),
              bad ? "FAIL" : "ok  ", worst, worst_err, worst_i, want.empty() ? 0.0 : got[worst_i],
              want.empty() ? 0.0 : want[worst_i]);
  return bad == 0;
}

inline std::vector<double> constant_bound(size_t n, double bound) { return std::vector<double>(n, bound); }

// ---- timing --------------------------------------------------------------------------------------

// Median milliseconds of launch() over reps runs, each between two events, after warm-up.
inline double time_ms(const std::function<void()>& launch, int reps = 50, int warmup = 5) {
  for (int i = 0; i < warmup; ++i) launch();
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms(reps);
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    launch();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms[i] = t;
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

// Runs a dev program's body; CUDA errors and bad arguments end it with a message and status 2.
inline int run_main(const std::function<int()>& body) {
  try {
    int device = 0;
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    std::printf("device %d: %s (sm_%d%d, %d SMs)\n", device, prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}

inline int arg_int(int argc, char** argv, int i, int fallback) {
  return argc > i ? std::atoi(argv[i]) : fallback;
}

}  // namespace dev
