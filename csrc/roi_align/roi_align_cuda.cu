// RoIAlign CUDA kernels: forward, fast (atomic) backward, deterministic backward.
//
// No ATen in this file: the binding (roi_align_cuda_ops.cpp) hands over a plain
// RoIAlignParams, so this translation unit compiles in seconds.
//
// Built with -fmad=false: the geometry and weights are then computed exactly as
// on the CPU, so the deterministic backward (and the forward) equal the CPU
// kernels bit for bit in float32/float64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common/device_scalar.cuh"
#include "roi_align_band.h"
#include "roi_align_cuda.h"
#include "roi_align_geometry.h"

namespace fastmask {
namespace {

constexpr int kThreads = 256;

// Output element `index` -> (k, c, ph, pw); c is fastest for channels_last.
struct BinIndex {
  int64_t k, c, ph, pw;
};

__device__ __forceinline__ BinIndex bin_index(int64_t index, const RoIAlignParams& p) {
  BinIndex b;
  if (p.channels_last) {
    b.c = index % p.channels;
    index /= p.channels;
    b.pw = index % p.pooled_width;
    index /= p.pooled_width;
    b.ph = index % p.pooled_height;
    b.k = index / p.pooled_height;
  } else {
    b.pw = index % p.pooled_width;
    index /= p.pooled_width;
    b.ph = index % p.pooled_height;
    index /= p.pooled_height;
    b.c = index % p.channels;
    b.k = index / p.channels;
  }
  return b;
}

// Element offset of pixel (n, c, y, x) in an [N, C, H, W] map of either layout.
__device__ __forceinline__ int64_t pixel_offset(const RoIAlignParams& p, int64_t n, int64_t c,
                                                int64_t y, int64_t x, int64_t h, int64_t w) {
  return p.channels_last ? ((n * h + y) * w + x) * p.channels + c
                         : ((n * p.channels + c) * h + y) * w + x;
}

template <typename T, typename A>
__global__ void forward_kernel(const RoIAlignParams p, int64_t total) {
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)gridDim.x * blockDim.x) {
    const BinIndex b = bin_index(index, p);
    int64_t level;
    const RoIGeometry<A> g = level_roi_geometry<A>(p, b.k, level);
    A sum = 0.;
    if (g.valid) {
      const RoIAlignLevel& lv = p.levels[level];
      const T* data = static_cast<const T*>(lv.features);
      const int64_t x_step = p.channels_last ? p.channels : 1;
      const T* base = data + pixel_offset(p, g.batch, b.c, 0, 0, lv.height, lv.width);
      int64_t iy0, iy1, ix0, ix1;
      sample_range(g.start_h, b.ph, g.bin_h, g.grid_h, lv.height, iy0, iy1);
      sample_range(g.start_w, b.pw, g.bin_w, g.grid_w, lv.width, ix0, ix1);
      for (int64_t iy = iy0; iy < iy1; ++iy) {
        AxisTap<A> ty;
        if (!axis_tap(sample_coordinate(g.start_h, b.ph, g.bin_h, iy, g.grid_h), lv.height, ty)) continue;
        const T* row_low = base + ty.low * lv.width * x_step;
        const T* row_high = base + ty.high * lv.width * x_step;
        for (int64_t ix = ix0; ix < ix1; ++ix) {
          AxisTap<A> tx;
          if (!axis_tap(sample_coordinate(g.start_w, b.pw, g.bin_w, ix, g.grid_w), lv.width, tx)) continue;
          const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
          sum += w1 * DeviceScalar<T>::load(row_low[tx.low * x_step]) +
                 w2 * DeviceScalar<T>::load(row_low[tx.high * x_step]) +
                 w3 * DeviceScalar<T>::load(row_high[tx.low * x_step]) +
                 w4 * DeviceScalar<T>::load(row_high[tx.high * x_step]);
        }
      }
      sum /= g.count;
    }
    static_cast<T*>(p.output)[index] = DeviceScalar<T>::store(sum);
  }
}

// One thread per output gradient element, scattering with atomics: fast, but
// the order of the additions (and so the last bits) varies from run to run.
template <typename T, typename A>
__global__ void backward_atomic_kernel(const RoIAlignParams p, int64_t total) {
  const T* grad_out = static_cast<const T*>(p.grad_output);
  const int64_t* gs = p.grad_output_strides;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)gridDim.x * blockDim.x) {
    const BinIndex b = bin_index(index, p);
    int64_t level;
    const RoIGeometry<A> g = level_roi_geometry<A>(p, b.k, level);
    if (!g.valid) continue;
    const RoIAlignLevel& lv = p.levels[level];
    A* grad = static_cast<A*>(lv.grad_features);
    const A go = DeviceScalar<T>::load(grad_out[b.k * gs[0] + b.c * gs[1] + b.ph * gs[2] + b.pw * gs[3]]);
    const A count = static_cast<A>(g.grid_h * g.grid_w);
    int64_t iy0, iy1, ix0, ix1;
    sample_range(g.start_h, b.ph, g.bin_h, g.grid_h, lv.height, iy0, iy1);
    sample_range(g.start_w, b.pw, g.bin_w, g.grid_w, lv.width, ix0, ix1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      AxisTap<A> ty;
      if (!axis_tap(sample_coordinate(g.start_h, b.ph, g.bin_h, iy, g.grid_h), lv.height, ty)) continue;
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        AxisTap<A> tx;
        if (!axis_tap(sample_coordinate(g.start_w, b.pw, g.bin_w, ix, g.grid_w), lv.width, tx)) continue;
        const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
        atomicAdd(grad + pixel_offset(p, g.batch, b.c, ty.low, tx.low, lv.height, lv.width), go * w1 / count);
        atomicAdd(grad + pixel_offset(p, g.batch, b.c, ty.low, tx.high, lv.height, lv.width), go * w2 / count);
        atomicAdd(grad + pixel_offset(p, g.batch, b.c, ty.high, tx.low, lv.height, lv.width), go * w3 / count);
        atomicAdd(grad + pixel_offset(p, g.batch, b.c, ty.high, tx.high, lv.height, lv.width), go * w4 / count);
      }
    }
  }
}

// Deterministic backward, gather-style: each block owns kBandRows rows of one image of one
// level and adds, thread by channel, the contributions that land there (roi_align_band.h).
// The gradient is channels_last, so that the threads' accesses are contiguous. blockDim.x is
// a multiple of 32 and at most kThreads. Its read-modify-writes wait on memory: three blocks
// per SM (80 registers, 12 bytes spilled, sm_90) rather than two hide more of that; float64
// gets two (128 registers, no spill; without a minimum ptxas takes 136, one block).
template <typename T, typename A>
__global__ void __launch_bounds__(kThreads, sizeof(A) == 4 ? 3 : 2)
    backward_deterministic_kernel(const RoIAlignParams p, const BandTable bands) {
  __shared__ uint32_t accepted[kThreads / 32];
  const Band band = band_of_block(bands, p, blockIdx.x);
  const RoIAlignLevel& lv = p.levels[band.level];
  const int64_t W = lv.width, C = p.channels;
  A* grad = static_cast<A*>(lv.grad_features) + band.image * lv.height * W * C;
  const T* grad_out = static_cast<const T*>(p.grad_output);
  const int64_t* gs = p.grad_output_strides;
  // Each thread tests one RoI of the chunk; a ballot per warp gathers the answers.
  auto chunk_masks = [&](int64_t base, int64_t end) -> const uint32_t* {
    __syncthreads();  // every thread is done with the previous chunk's words
    const int64_t j = base + threadIdx.x;
    RoIGeometry<A> g;
    int64_t ph0, ph1;
    const bool accept = j < end && band_roi(p, band, p.roi_order[j], g, ph0, ph1);
    const uint32_t bits = __ballot_sync(0xffffffffu, accept);
    if (threadIdx.x % 32 == 0) accepted[threadIdx.x / 32] = bits;
    __syncthreads();
    return accepted;
  };
  for_each_band_roi(p, band, blockDim.x, chunk_masks, [&](int64_t k) {
    RoIGeometry<A> g;
    int64_t ph0, ph1;
    band_roi(p, band, k, g, ph0, ph1);
    band_roi_backward<A>(
        p, band, k, g, ph0, ph1, threadIdx.x, blockDim.x,
        [&](int64_t roi, int64_t c, int64_t ph, int64_t pw) {
          return static_cast<A>(DeviceScalar<T>::load(grad_out[roi * gs[0] + c * gs[1] + ph * gs[2] + pw * gs[3]]));
        },
        [&](const BandSample& s, int64_t c, A v1, A v2, A v3, A v4) {
          add_sample_taps(grad + s.y_low * W * C + c, grad + s.y_high * W * C + c, s, C, v1, v2, v3, v4);
        });
  });
}

int64_t grid_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return blocks < 65535 * 32 ? blocks : 65535 * 32;  // grid-stride loops cover the rest
}

template <typename T, typename A>
LaunchStatus launch_forward(const RoIAlignParams& p, cudaStream_t stream) {
  const int64_t total = p.num_rois * p.channels * p.pooled_height * p.pooled_width;
  forward_kernel<T, A><<<grid_blocks(total), kThreads, 0, stream>>>(p, total);
  FASTMASK_RETURN_IF_LAUNCH_FAILED("roi_align forward_kernel");
  return {};
}

template <typename T, typename A>
LaunchStatus launch_backward(const RoIAlignParams& p, bool deterministic, cudaStream_t stream) {
  if (!deterministic) {
    const int64_t total = p.num_rois * p.channels * p.pooled_height * p.pooled_width;
    backward_atomic_kernel<T, A><<<grid_blocks(total), kThreads, 0, stream>>>(p, total);
    FASTMASK_RETURN_IF_LAUNCH_FAILED("roi_align backward_atomic_kernel");
    return {};
  }
  const BandTable bands = band_table(p);
  if (bands.num_blocks == 0) return {};
  if (bands.num_blocks > INT32_MAX)
    return {cudaErrorInvalidConfiguration, "roi_align backward_deterministic_kernel (over 2^31 - 1 bands)"};
  const int threads = p.channels >= kThreads ? kThreads : static_cast<int>((p.channels + 31) / 32 * 32);
  backward_deterministic_kernel<T, A><<<static_cast<unsigned>(bands.num_blocks), threads, 0, stream>>>(p, bands);
  FASTMASK_RETURN_IF_LAUNCH_FAILED("roi_align backward_deterministic_kernel");
  return {};
}

}  // namespace

LaunchStatus roi_align_forward_cuda(const RoIAlignParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch_forward<float, float>(p, stream);
    case ScalarKind::kFloat64: return launch_forward<double, double>(p, stream);
    case ScalarKind::kFloat16: return launch_forward<__half, float>(p, stream);
    case ScalarKind::kBFloat16: return launch_forward<__nv_bfloat16, float>(p, stream);
  }
  return {cudaErrorInvalidValue, "roi_align forward_kernel (unknown dtype)"};
}

LaunchStatus roi_align_backward_cuda(const RoIAlignParams& p, bool deterministic, cudaStream_t stream) {
  switch (p.dtype) {
    case ScalarKind::kFloat32: return launch_backward<float, float>(p, deterministic, stream);
    case ScalarKind::kFloat64: return launch_backward<double, double>(p, deterministic, stream);
    case ScalarKind::kFloat16: return launch_backward<__half, float>(p, deterministic, stream);
    case ScalarKind::kBFloat16: return launch_backward<__nv_bfloat16, float>(p, deterministic, stream);
  }
  return {cudaErrorInvalidValue, "roi_align backward (unknown dtype)"};
}

}  // namespace fastmask
