// PyTorch's bilinear resampling rule (F.interpolate, mode="bilinear",
// align_corners=False, antialias=False), shared by the resize and mask-pasting
// kernels on the CPU and the GPU.
//
// The arithmetic is PyTorch's CPU kernels', in the forms they take:
//  - fused or not: PyTorch's AVX2 and AVX-512 kernels are compiled with fused
//    multiply-adds (the compiler contracts a * b + c), its DEFAULT ones (ATen CPU
//    capability "DEFAULT") are not; and the source index (fma(step, d + 0.5, -0.5)
//    or its rounded product and sum) may be computed by other code than the blends
//    (torch 2.15's separable kernel: unfused index, fused blends). `BilinearRounding`
//    says which, per kernel; resize/torch_rounding.cpp finds out by asking torch.
//  - the kernel: upsample_bilinear2d runs a separable kernel (each row blends
//    two taps, then the two rows blend: `blend`) or, for channels_last inputs
//    with more than 3 channels, outputs with height + width <= 128, and 3-channel
//    inputs on one thread, a channels-last kernel that weighs the four taps by
//    products of the axes' weights (`four_tap`).
// The binding picks the kernel as PyTorch would for the same call, so float32 and
// float64 results equal F.interpolate's bit for bit on any CPU and thread count.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

// CPU loops that call mul_add: a clone with hardware fma, picked at load time
// where the CPU has it (else std::fma is a library call per element). GCC 12 and
// later also dispatch on the x86-64 levels: AVX-512 (v4) and AVX2 (v3, whose
// integer vectors pack the bool outputs of comparisons), both with fma; vector
// width does not change results (no contraction, no reassociation). (The few CPUs
// with fma but not AVX2, of 2012-13, take the default clone.)
#if !defined(__CUDACC__) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define FASTMASK_FMA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif !defined(__CUDACC__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
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

// a * b + c as PyTorch's kernels compute it: one rounding when fused, two when not
// (this code is built with -ffp-contract=off / -fmad=false, so nothing else fuses).
template <bool Fused, typename A>
FASTMASK_HOST_DEVICE A torch_mul_add(A a, A b, A c) {
  if constexpr (Fused) {
    return mul_add(a, b, c);
  } else {
    return a * b + c;
  }
}

// Whether one of PyTorch's bilinear kernels fuses the multiply-add of its source index and
// those of its blends.
struct BilinearRounding {
  bool index_fused = true;
  bool blend_fused = true;
};

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
template <typename A, bool Fused = true>
FASTMASK_HOST_DEVICE LinearTap<A> linear_tap(int64_t d, int64_t in, int64_t out, A step) {
  LinearTap<A> t;
  if (in == out) {
    t.i0 = t.i1 = d;
    t.w0 = A(1);
    t.w1 = A(0);
    return t;
  }
  A src = torch_mul_add<Fused>(step, static_cast<A>(d) + A(0.5), A(-0.5));
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

// linear_tap with the index rounding chosen at run time (CPU: computed once per row or column).
template <typename A>
inline LinearTap<A> linear_tap(int64_t d, int64_t in, int64_t out, A step, bool index_fused) {
  return index_fused ? linear_tap<A, true>(d, in, out, step) : linear_tap<A, false>(d, in, out, step);
}

// One blend of two taps, in PyTorch's order (its separable kernel).
template <typename A, bool Fused = true>
FASTMASK_HOST_DEVICE A blend(A v0, A w0, A v1, A w1) {
  return torch_mul_add<Fused>(v0, w0, v1 * w1);
}

// Whether upsample_bilinear2d takes its channels-last kernel on the CPU (its own
// rule, in upsample_bilinear2d_kernel_impl_float), for an input of `channels`
// that is channels_last-contiguous or not, on one thread or more.
inline bool torch_takes_four_tap(bool channels_last_input, int64_t channels, int64_t out_height, int64_t out_width,
                                 bool single_thread) {
  return (channels_last_input && channels > 3) || out_height + out_width <= 128 || (single_thread && channels == 3);
}

// Channels of PyTorch's channels-last kernel below a multiple of its vector width
// (32 bytes under every CPU capability: 8 floats, 4 doubles) go through its
// vector code, the rest through its scalar loop; the two sum the four taps in
// different orders.
template <typename A>
FASTMASK_HOST_DEVICE bool torch_vector_lane(int64_t channel, int64_t channels) {
  constexpr int64_t lanes = 32 / sizeof(A);
  return channel < channels - channels % lanes;
}

// PyTorch's channels-last kernel: taps v<y><x> at source rows (y0, y1) and
// columns (x0, x1), weighted by products of the row and column weights.
template <typename A, bool Fused>
FASTMASK_HOST_DEVICE A four_tap(A v00, A v01, A v10, A v11, const LinearTap<A>& ty, const LinearTap<A>& tx,
                                bool vector_lane) {
  const A w00 = ty.w0 * tx.w0, w01 = ty.w0 * tx.w1, w10 = ty.w1 * tx.w0, w11 = ty.w1 * tx.w1;
  if (vector_lane) {  // v00 w00 + (v01 w01 + (v10 w10 + v11 w11)); its compiler fuses v11 w11 there
    const A low = torch_mul_add<Fused>(v11, w11, v10 * w10);
    return torch_mul_add<Fused>(v00, w00, torch_mul_add<Fused>(v01, w01, low));
  }
  // ((v00 w00 + v01 w01) + v10 w10) + v11 w11
  const A top = torch_mul_add<Fused>(v00, w00, v01 * w01);
  return torch_mul_add<Fused>(v11, w11, torch_mul_add<Fused>(v10, w10, top));
}

}  // namespace fastmask
