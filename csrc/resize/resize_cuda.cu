// Bilinear resize on CUDA: a thread per output column, walking output rows
// (x fastest, so reads and writes of NCHW rows coalesce; no 64-bit division per
// element: a thread splits its first row and its row step into (n, c, y) once,
// then advances by additions); taps computed in place (cheaper than the loads),
// normalisation applied to each of the four source values as on the CPU.
// Padding elements of the canvas are written with zeros by the same launch.
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
constexpr int64_t kMaxGridY = 65535;

// Loads and stores of the pixel types: the floating types through DeviceScalar,
// uint8 rounded to nearest and clamped.
template <typename T>
struct Pixel : DeviceScalar<T> {};

template <>
struct Pixel<uint8_t> {
  using Acc = float;
  static __device__ __forceinline__ float load(uint8_t v) { return static_cast<float>(v); }
  static __device__ __forceinline__ uint8_t store(float v) {
    return static_cast<uint8_t>(fminf(fmaxf(rintf(v), 0.f), 255.f));
  }
};

// A source value, normalised as torchvision does before resizing (see ResizeParams).
template <typename Src, typename A>
__device__ __forceinline__ A source_value(const ResizeParams& p, Src v, int64_t c) {
  if constexpr (std::is_same_v<Src, uint8_t>) {
    if (!p.normalise) return static_cast<A>(v);
    // (v / 255 - mean) / std in float32 with IEEE division, as the CPU table.
    return (static_cast<float>(v) / 255.f - static_cast<float>(p.mean[c])) / static_cast<float>(p.std[c]);
  } else {
    using P = Pixel<Src>;
    const A x = P::load(v);
    if (!p.normalise) return x;
    // In the image dtype, each operation rounded to it, as torch does.
    const A mean = P::load(P::store(static_cast<A>(p.mean[c]))), std_dev = P::load(P::store(static_cast<A>(p.std[c])));
    const A centred = P::load(P::store(x - mean));
    return P::load(P::store(centred / std_dev));
  }
}

// Output row r = (n * channels + c) * canvas_height + y as its (n, c, y), advanced by a fixed
// number of rows with additions and at most two carries: divisions happen once per thread.
struct RowCursor {
  int64_t n, c, y;

  __device__ static RowCursor split(int64_t row, int64_t channels, int64_t height) {
    const int64_t plane = row / height;
    return {plane / channels, plane % channels, row % height};
  }

  // `step` is split(rows advanced): its y < height and c < channels, so one subtraction each
  // brings y and c back in range.
  __device__ void advance(const RowCursor& step, int64_t channels, int64_t height) {
    n += step.n, c += step.c, y += step.y;
    if (y >= height) y -= height, ++c;
    if (c >= channels) c -= channels, ++n;
  }
};

// Threads along x of one output row (blockIdx.x: chunk of the row); blockIdx.y walks the rows
// of all planes of the canvas (n < batch exactly while the row index is below their count).
template <typename Src, typename Dst, typename A>
__global__ void resize_kernel(const ResizeParams p, A step_h, A step_w) {
  const Src* src = static_cast<const Src*>(p.src);
  Dst* dst = static_cast<Dst*>(p.dst);
  const int64_t x = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (x >= p.canvas_width) return;
  const bool column_inside = x < p.out_width;
  const LinearTap<A> tx = linear_tap<A>(column_inside ? x : 0, p.in_width, p.out_width, step_w);
  const int64_t x0 = tx.i0 * p.src_stride[3], x1 = tx.i1 * p.src_stride[3];
  const RowCursor step = RowCursor::split(gridDim.y, p.channels, p.canvas_height);
  for (RowCursor r = RowCursor::split(blockIdx.y, p.channels, p.canvas_height); r.n < p.batch;
       r.advance(step, p.channels, p.canvas_height)) {
    Dst* out = dst + r.n * p.dst_stride[0] + r.c * p.dst_stride[1] + r.y * p.dst_stride[2] + x * p.dst_stride[3];
    if (r.y >= p.out_height || !column_inside) {
      *out = Pixel<Dst>::store(A(0));
      continue;
    }
    const LinearTap<A> ty = linear_tap<A>(r.y, p.in_height, p.out_height, step_h);
    const Src* plane_src = src + r.n * p.src_stride[0] + r.c * p.src_stride[1];
    const Src* row0 = plane_src + ty.i0 * p.src_stride[2];
    const Src* row1 = plane_src + ty.i1 * p.src_stride[2];
    const A v0 = blend(source_value<Src, A>(p, row0[x0], r.c), tx.w0, source_value<Src, A>(p, row0[x1], r.c), tx.w1);
    const A v1 = blend(source_value<Src, A>(p, row1[x0], r.c), tx.w0, source_value<Src, A>(p, row1[x1], r.c), tx.w1);
    *out = Pixel<Dst>::store(blend(v0, ty.w0, v1, ty.w1));
  }
}

template <typename Src, typename Dst, typename A>
LaunchStatus launch(const ResizeParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch * p.channels * p.canvas_height;
  if (rows == 0) return {};
  const dim3 grid(static_cast<unsigned>((p.canvas_width + kThreads - 1) / kThreads),
                  static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
  resize_kernel<Src, Dst, A><<<grid, kThreads, 0, stream>>>(
      p, source_step<A>(p.in_height, p.out_height, p.scale_factor_h),
      source_step<A>(p.in_width, p.out_width, p.scale_factor_w));
  FASTMASK_RETURN_IF_LAUNCH_FAILED("resize_kernel");
  return {};
}

}  // namespace

LaunchStatus resize_bilinear_cuda(const ResizeParams& p, cudaStream_t stream) {
  if (p.src_uint8)
    return p.dst_uint8 ? launch<uint8_t, uint8_t, float>(p, stream) : launch<uint8_t, float, float>(p, stream);
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch<float, float, float>(p, stream);
    case ScalarKind::kFloat64: return launch<double, double, double>(p, stream);
    case ScalarKind::kFloat16: return launch<__half, __half, float>(p, stream);
    case ScalarKind::kBFloat16: return launch<__nv_bfloat16, __nv_bfloat16, float>(p, stream);
  }
  return {cudaErrorInvalidValue, "resize_kernel (unknown dtype)"};
}

}  // namespace fastmask
