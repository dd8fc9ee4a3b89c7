// PyTorch's bilinear resampling rule (F.interpolate, mode="bilinear",
// align_corners=False, antialias=False), shared by the resize and mask-pasting
// kernels on the CPU and the GPU.
//
// The arithmetic is PyTorch's CPU kernel's as built for AVX2 (its default on
// x86-64), fused multiply-adds included: the source index is one fma, a row
// blends its two taps as fma(v0, w0, v1 * w1), and so do the two rows. With it,
// float32 results equal F.interpolate's bit for bit on its main 2-D path.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

// CPU loops that call mul_add: a clone with hardware fma, picked at load time
// where the CPU has it (else std::fma is a library call per element).
#if !defined(__CUDACC__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTMASK_FMA_CLONES __attribute__((target_clones("fma", "default")))
#else
#define FASTMASK_FMA_CLONES
#endif

namespace fastmask {

template <typename A>
FASTMASK_HOST_DEVICE A mul_add(A a, A b, A c) {
#if defined(__CUDA_ARCH__)
  return fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// The two source indices and weights of one output index along one axis.
template <typename A>
struct LinearTap {
  int64_t i0, i1;
  A w0, w1;
};

// Source pixels per output pixel (PyTorch's area_pixel_compute_scale): 1 / scale_factor
// when F.interpolate got a scale factor it uses as is, else in / out in the compute type.
template <typename A>
FASTMASK_HOST_DEVICE A source_step(int64_t in, int64_t out, double scale_factor /* <= 0: none */) {
  return scale_factor > 0 ? static_cast<A>(1.0 / scale_factor) : static_cast<A>(in) / static_cast<A>(out);
}

// PyTorch's compute_source_index_and_lambda: source index (d + 0.5) * step - 0.5,
// clamped at 0; equal sizes copy.
template <typename A>
FASTMASK_HOST_DEVICE LinearTap<A> linear_tap(int64_t d, int64_t in, int64_t out, A step) {
  LinearTap<A> t;
  if (in == out) {
    t.i0 = t.i1 = d;
    t.w0 = A(1);
    t.w1 = A(0);
    return t;
  }
  A src = mul_add(step, static_cast<A>(d) + A(0.5), A(-0.5));
  src = src < A(0) ? A(0) : src;
  // PyTorch floors with floorf, for float64 too.
#if defined(__CUDA_ARCH__)
  const int64_t i = static_cast<int64_t>(floorf(static_cast<float>(src)));
#else
  const int64_t i = static_cast<int64_t>(std::floor(static_cast<float>(src)));
#endif
  t.i0 = i < in - 1 ? i : in - 1;
  t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
  A l = src - static_cast<A>(t.i0);
  l = l < A(0) ? A(0) : (l > A(1) ? A(1) : l);
  t.w1 = l;
  t.w0 = A(1) - l;
  return t;
}

// One blend of two taps, in PyTorch's order.
template <typename A>
FASTMASK_HOST_DEVICE A blend(A v0, A w0, A v1, A w1) {
  return mul_add(v0, w0, v1 * w1);
}

}  // namespace fastmask
