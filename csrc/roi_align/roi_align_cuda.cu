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
#include "roi_align_cuda.h"
#include "roi_align_geometry.h"

namespace fastmask {
namespace {

constexpr int kThreads = 256;
// Rows of one image's feature map owned by one block of the deterministic backward.
constexpr int64_t kBandRows = 4;

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

template <typename A>
__device__ __forceinline__ RoIGeometry<A> geometry_of(const RoIAlignParams& p, int64_t k, int64_t& level) {
  level = p.roi_levels ? p.roi_levels[k] : 0;
  if (level < 0 || level >= p.num_levels) {
    RoIGeometry<A> g{};
    g.valid = false;
    return g;
  }
  return roi_geometry<A>(static_cast<const A*>(p.rois) + 5 * k,
                         static_cast<A>(p.levels[level].spatial_scale), p.pooled_height,
                         p.pooled_width, p.sampling_ratio, p.aligned, p.batch_size);
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
    const RoIGeometry<A> g = geometry_of<A>(p, b.k, level);
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
    const RoIGeometry<A> g = geometry_of<A>(p, b.k, level);
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

// Whether samples in the span [start, start + extent] (extent may be negative:
// inverted boxes in aligned mode) can touch rows [y0, y1). Conservative by two
// rows each side, covering the clamping of samples to the map and rounding.
__device__ __forceinline__ bool rows_may_meet(double start, double extent, int64_t y0, int64_t y1) {
  const double end = start + extent;
  const double top = floor(start < end ? start : end) - 2;
  const double bottom = floor(start < end ? end : start) + 2;
  return !(bottom < y0 || top >= y1);
}

struct BandTable {
  int64_t first_block[kMaxLevels + 1];  // blocks of level l: [first_block[l], first_block[l+1])
  int64_t bands[kMaxLevels];            // bands per image of level l
};

// Deterministic backward, gather-style: each block owns kBandRows rows of one
// image of one level (threads own channels, so the gradient is channels_last),
// walks every RoI in order and adds the contributions that land in its rows.
// Each gradient element is written by one thread, in the CPU kernel's order
// (RoI, bin, sample, tap): no atomics, the same bits every run.
template <typename T, typename A>
__global__ void backward_deterministic_kernel(const RoIAlignParams p, const BandTable bands) {
  const int64_t block = blockIdx.x;
  int level = 0;
  while (level + 1 < p.num_levels && block >= bands.first_block[level + 1]) ++level;
  const int64_t local = block - bands.first_block[level];
  const int64_t n = local / bands.bands[level];
  const int64_t y0 = (local % bands.bands[level]) * kBandRows;
  const RoIAlignLevel& lv = p.levels[level];
  const int64_t y1 = y0 + kBandRows < lv.height ? y0 + kBandRows : lv.height;
  const int64_t H = lv.height, W = lv.width, C = p.channels;
  A* grad = static_cast<A*>(lv.grad_features) + n * H * W * C;
  const T* grad_out = static_cast<const T*>(p.grad_output);
  const int64_t* gs = p.grad_output_strides;

  // Threads own channels; per element the additions run over (RoI, bin, sample, tap) in order.
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    for (int64_t k = 0; k < p.num_rois; ++k) {
      int64_t roi_level;
      const RoIGeometry<A> g = geometry_of<A>(p, k, roi_level);
      if (!g.valid || roi_level != level || g.batch != n) continue;
      if (!rows_may_meet(g.start_h, g.bin_h * p.pooled_height, y0, y1)) continue;
      const A count = static_cast<A>(g.grid_h * g.grid_w);
      const T* go_roi = grad_out + k * gs[0] + c * gs[1];
      for (int64_t ph = 0; ph < p.pooled_height; ++ph) {
        if (!rows_may_meet(g.start_h + ph * g.bin_h, g.bin_h, y0, y1)) continue;
        int64_t iy0, iy1, ix0, ix1;
        sample_range(g.start_h, ph, g.bin_h, g.grid_h, H, iy0, iy1);
        for (int64_t pw = 0; pw < p.pooled_width; ++pw) {
          sample_range(g.start_w, pw, g.bin_w, g.grid_w, W, ix0, ix1);
          const A go = DeviceScalar<T>::load(go_roi[ph * gs[2] + pw * gs[3]]);
          for (int64_t iy = iy0; iy < iy1; ++iy) {
            AxisTap<A> ty;
            if (!axis_tap(sample_coordinate(g.start_h, ph, g.bin_h, iy, g.grid_h), H, ty)) continue;
            const bool low_in = ty.low >= y0 && ty.low < y1;
            const bool high_in = ty.high >= y0 && ty.high < y1;
            if (!low_in && !high_in) continue;
            for (int64_t ix = ix0; ix < ix1; ++ix) {
              AxisTap<A> tx;
              if (!axis_tap(sample_coordinate(g.start_w, pw, g.bin_w, ix, g.grid_w), W, tx)) continue;
              const auto [w1, w2, w3, w4] = bilinear_weights(ty, tx);
              if (low_in) {
                grad[(ty.low * W + tx.low) * C + c] += go * w1 / count;
                grad[(ty.low * W + tx.high) * C + c] += go * w2 / count;
              }
              if (high_in) {
                grad[(ty.high * W + tx.low) * C + c] += go * w3 / count;
                grad[(ty.high * W + tx.high) * C + c] += go * w4 / count;
              }
            }
          }
        }
      }
    }
  }
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
  BandTable bands{};
  for (int l = 0; l < p.num_levels; ++l) {
    bands.bands[l] = (p.levels[l].height + kBandRows - 1) / kBandRows;
    bands.first_block[l + 1] = bands.first_block[l] + p.batch_size * bands.bands[l];
  }
  const int64_t blocks = bands.first_block[p.num_levels];
  if (blocks == 0) return {};
  const int threads = p.channels >= kThreads ? kThreads : static_cast<int>((p.channels + 31) / 32 * 32);
  backward_deterministic_kernel<T, A><<<blocks, threads, 0, stream>>>(p, bands);
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
