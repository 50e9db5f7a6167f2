// Shared by every kernel file: the SYCL headers and the marker of a free-function kernel.
// Kernels are extern "C" so the bridge finds them by their plain names; launch ranges are given
// in SYCL order, so the last dimension is the fastest one (the SIMD lanes on a CPU device).
#pragma once
#include <sycl/sycl.hpp>

#include <limits>

namespace syclexp = sycl::ext::oneapi::experimental;

#define POLYVIT_KERNEL(DIMS) \
    extern "C" SYCL_EXT_ONEAPI_FUNCTION_PROPERTY((syclexp::nd_range_kernel<DIMS>)) void

inline sycl::nd_item<2> work_item2() {
    return sycl::ext::oneapi::this_work_item::get_nd_item<2>();
}
