// Shared by every kernel file: the SYCL headers and the markers of a free-function kernel.
// Kernels are extern "C" so the bridge finds them by their plain names; launch ranges are given
// in SYCL order, so the last dimension is the fastest one.
#pragma once
#include <sycl/sycl.hpp>

#include <limits>

// The tile sizes the backend also computes launch ranges, scratch sizes and weight layouts from:
// defined once in sycl_backend.py and passed to the kernel compiler, never repeated here.
#if !defined(POLYVIT_VECTOR) || !defined(POLYVIT_PANEL) || !defined(POLYVIT_ROWS) || \
    !defined(POLYVIT_QUERIES) || !defined(POLYVIT_SUB_GROUP)
#error "build with -DPOLYVIT_VECTOR, -DPOLYVIT_PANEL, -DPOLYVIT_ROWS, -DPOLYVIT_QUERIES and -DPOLYVIT_SUB_GROUP (sycl_backend.py passes them)"
#endif
// vec16, load16 and sum16 below are written for 16 floats
static_assert(POLYVIT_VECTOR == 16, "the kernels' vectors hold 16 floats");

namespace syclexp = sycl::ext::oneapi::experimental;

using vec16 = sycl::vec<float, POLYVIT_VECTOR>;

// A kernel whose work-items cooperate across the last dimension (16 per group): on a CPU device
// the compiler maps those 16 work-items onto SIMD lanes.
#define POLYVIT_KERNEL(DIMS) \
    extern "C" SYCL_EXT_ONEAPI_FUNCTION_PROPERTY((syclexp::nd_range_kernel<DIMS>)) void

// A kernel that vectorises itself with sycl::vec, one work-item per group. It asks for the
// device's smallest sub-group (POLYVIT_SUB_GROUP, set by the backend): at the default of 16 the
// OpenCL CPU compiler also packs work-items into lanes, its register blocks spill, and the GEMM
// ran at half speed; the smallest size also compiles fastest.
#define POLYVIT_VEC_KERNEL(DIMS)                                                              \
    extern "C" SYCL_EXT_ONEAPI_FUNCTION_PROPERTY((syclexp::nd_range_kernel<DIMS>))            \
        SYCL_EXT_ONEAPI_FUNCTION_PROPERTY((syclexp::sub_group_size<POLYVIT_SUB_GROUP>)) void

inline sycl::nd_item<2> work_item2() {
    return sycl::ext::oneapi::this_work_item::get_nd_item<2>();
}

// The 16 floats at p, which must be 64-byte aligned.
inline vec16 load16(const float *p) { return *reinterpret_cast<const vec16 *>(p); }
inline void store16(float *p, const vec16 &v) { *reinterpret_cast<vec16 *>(p) = v; }

inline float sum16(const vec16 &v) {
    const sycl::vec<float, 8> a = v.lo() + v.hi();
    const sycl::vec<float, 4> b = a.lo() + a.hi();
    const sycl::vec<float, 2> c = b.lo() + b.hi();
    return c.x() + c.y();
}
