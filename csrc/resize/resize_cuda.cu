// Bilinear resize on CUDA: one thread per output element of the canvas
// (x fastest, so reads and writes of NCHW rows coalesce), the taps of its row
// and column computed in place (they cost less than the loads), normalisation
// applied to each of the four source values as on the CPU. Padding elements
// of the canvas are written with zeros by the same launch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/device_scalar.cuh"
#include "common/linear_interp.h"
#include "resize_cuda.h"

namespace fastmask {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;

// Loads and stores of the pixel types: the floating types through DeviceScalar,
// uint8 rounded to nearest and clamped.
template <typename T>
struct Pixel : DeviceScalar<T> {};

template <>
struct Pixel<uint8_t> {
  using Acc = float;
  static __device__ __forceinline__ float load(uint8_t v) { return static_cast<float>(v); }
  static __device__ __forceinline__ uint8_t store(float v) { return static_cast<uint8_t>(fminf(fmaxf(rintf(v), 0.f), 255.f)); }
};

// A source value, normalised as torchvision does before resizing (see ResizeParams).
template <typename Src, typename A>
__device__ __forceinline__ A source_value(const ResizeParams& p, Src v, int64_t c) {
  if constexpr (std::is_same_v<Src, uint8_t>) {
    if (p.lut) return static_cast<A>(p.lut[c * 256 + v]);
    return static_cast<A>(v);
  } else {
    using P = Pixel<Src>;
    const A x = P::load(v);
    if (!p.mean_std) return x;
    const Src* ms = static_cast<const Src*>(p.mean_std);
    const A centred = P::load(P::store(x - P::load(ms[c])));  // rounded to the image dtype, as torch does
    return P::load(P::store(centred / P::load(ms[p.channels + c])));
  }
}

template <typename Src, typename Dst, typename A>
__global__ void resize_kernel(const ResizeParams p, A step_h, A step_w, int64_t total) {
  const Src* src = static_cast<const Src*>(p.src);
  Dst* dst = static_cast<Dst*>(p.dst);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t x = i % p.canvas_width;
    int64_t rest = i / p.canvas_width;
    const int64_t y = rest % p.canvas_height;
    rest /= p.canvas_height;
    const int64_t c = rest % p.channels, n = rest / p.channels;
    Dst* out = dst + n * p.dst_stride[0] + c * p.dst_stride[1] + y * p.dst_stride[2] + x * p.dst_stride[3];
    if (y >= p.out_height || x >= p.out_width) {
      *out = Pixel<Dst>::store(A(0));
      continue;
    }
    const LinearTap<A> ty = linear_tap<A>(y, p.in_height, p.out_height, step_h);
    const LinearTap<A> tx = linear_tap<A>(x, p.in_width, p.out_width, step_w);
    const Src* plane = src + n * p.src_stride[0] + c * p.src_stride[1];
    const Src* row0 = plane + ty.i0 * p.src_stride[2];
    const Src* row1 = plane + ty.i1 * p.src_stride[2];
    const int64_t x0 = tx.i0 * p.src_stride[3], x1 = tx.i1 * p.src_stride[3];
    const A r0 = blend(source_value<Src, A>(p, row0[x0], c), tx.w0, source_value<Src, A>(p, row0[x1], c), tx.w1);
    const A r1 = blend(source_value<Src, A>(p, row1[x0], c), tx.w0, source_value<Src, A>(p, row1[x1], c), tx.w1);
    *out = Pixel<Dst>::store(blend(r0, ty.w0, r1, ty.w1));
  }
}

template <typename Src, typename Dst, typename A>
cudaError_t launch(const ResizeParams& p, cudaStream_t stream) {
  const int64_t total = p.batch * p.channels * p.canvas_height * p.canvas_width;
  if (total == 0) return cudaSuccess;
  const int64_t needed = (total + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(needed < kMaxBlocks ? needed : kMaxBlocks);
  resize_kernel<Src, Dst, A><<<blocks, kThreads, 0, stream>>>(
      p, source_step<A>(p.in_height, p.out_height, p.scale_factor_h),
      source_step<A>(p.in_width, p.out_width, p.scale_factor_w), total);
  return cudaGetLastError();
}

}  // namespace

cudaError_t resize_bilinear_cuda(const ResizeParams& p, cudaStream_t stream) {
  if (p.src_uint8)
    return p.dst_uint8 ? launch<uint8_t, uint8_t, float>(p, stream) : launch<uint8_t, float, float>(p, stream);
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch<float, float, float>(p, stream);
    case ScalarKind::kFloat64: return launch<double, double, double>(p, stream);
    case ScalarKind::kFloat16: return launch<__half, __half, float>(p, stream);
    case ScalarKind::kBFloat16: return launch<__nv_bfloat16, __nv_bfloat16, float>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace fastmask
