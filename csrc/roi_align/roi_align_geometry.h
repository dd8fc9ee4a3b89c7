// RoI geometry and bilinear taps, shared by the CPU and CUDA kernels.
//
// The arithmetic follows torchvision's roi_align expression by expression (the
// same operations, types and order), so float32/float64 results are equal to
// torchvision's bit for bit. Bilinear weights are separable: a sample's four
// weights are products of one y-tap and one x-tap, so kernels compute the taps
// of each axis once and form the products where they are used.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"
#include "roi_align_params.h"

namespace fastmask {

template <typename T>
struct RoIGeometry {
  T start_h, start_w;  // top-left corner on the feature map
  T bin_h, bin_w;      // bin size
  int64_t grid_h, grid_w;  // samples per bin along each axis
  T count;             // forward divisor: max(grid_h * grid_w, 1)
  int64_t batch;       // image index
  bool valid;          // false: non-finite coordinates or bad batch index -> zeros
};

template <typename T>
FASTMASK_HOST_DEVICE bool is_finite_value(T v) {
  // Written without std::isfinite so the same code runs on the device.
  return v == v && v - v == v - v;
}

// Samples per bin along one axis. torchvision stores ceil(size / pooled) in an
// int, which is undefined for huge or NaN sizes; here it saturates instead.
template <typename T>
FASTMASK_HOST_DEVICE int64_t grid_size(T roi_size, int64_t pooled, int64_t sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  const T g = ceil(roi_size / static_cast<T>(pooled));
  if (!(g > 0)) return 0;
  if (g > static_cast<T>(INT32_MAX)) return INT32_MAX;
  return static_cast<int64_t>(g);
}

template <typename T>
FASTMASK_HOST_DEVICE RoIGeometry<T> roi_geometry(
    const T* roi, T spatial_scale, int64_t pooled_height, int64_t pooled_width,
    int64_t sampling_ratio, bool aligned, int64_t batch_size) {
  RoIGeometry<T> g;
  const T offset = aligned ? (T)0.5 : (T)0.0;
  g.start_w = roi[1] * spatial_scale - offset;
  g.start_h = roi[2] * spatial_scale - offset;
  const T end_w = roi[3] * spatial_scale - offset;
  const T end_h = roi[4] * spatial_scale - offset;
  T roi_width = end_w - g.start_w;
  T roi_height = end_h - g.start_h;
  if (!aligned) {
    // torchvision forces malformed RoIs to 1x1 in the legacy mode.
    roi_width = roi_width > (T)1. ? roi_width : (T)1.;
    roi_height = roi_height > (T)1. ? roi_height : (T)1.;
  }
  g.bin_h = static_cast<T>(roi_height) / static_cast<T>(pooled_height);
  g.bin_w = static_cast<T>(roi_width) / static_cast<T>(pooled_width);
  g.grid_h = grid_size(roi_height, pooled_height, sampling_ratio);
  g.grid_w = grid_size(roi_width, pooled_width, sampling_ratio);
  const int64_t n = g.grid_h * g.grid_w;
  g.count = static_cast<T>(n > 1 ? n : 1);
  // The batch index truncates toward zero, as torchvision's int cast; it is
  // range-checked before the cast, which would be undefined out of range.
  const T b = roi[0];
  const bool in_batch = b > (T)-1 && b < static_cast<T>(batch_size);
  g.valid = in_batch && is_finite_value(g.start_w) && is_finite_value(g.start_h) &&
            is_finite_value(end_w) && is_finite_value(end_h);
  g.batch = g.valid ? static_cast<int64_t>(b) : -1;
  return g;
}

// Coordinate of sample i of bin p along one axis (torchvision's expression).
template <typename T>
FASTMASK_HOST_DEVICE T sample_coordinate(T start, int64_t p, T bin, int64_t i, int64_t grid) {
  return start + p * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
}

// The two pixels a sample interpolates between along one axis, and weights.
template <typename T>
struct AxisTap {
  int64_t low, high;
  T lw, hw;  // weight of `high` (the fraction), weight of `low` (1 - fraction)
};

// Returns false when the sample lies outside [-1, size] (it contributes zero).
template <typename T>
FASTMASK_HOST_DEVICE bool axis_tap(T coord, int64_t size, AxisTap<T>& tap) {
  if (!(coord >= -1.0 && coord <= size)) return false;
  if (coord <= 0) coord = 0;
  int64_t low = static_cast<int>(coord);
  int64_t high;
  if (low >= size - 1) {
    high = low = size - 1;
    coord = (T)low;
  } else {
    high = low + 1;
  }
  tap.low = low;
  tap.high = high;
  tap.lw = coord - low;
  tap.hw = 1. - tap.lw;
  return true;
}

// The four weights of a sample, in torchvision's order: (low y, low x),
// (low y, high x), (high y, low x), (high y, high x).
template <typename T>
struct BilinearWeights {
  T w1, w2, w3, w4;
};

template <typename T>
FASTMASK_HOST_DEVICE BilinearWeights<T> bilinear_weights(const AxisTap<T>& ty, const AxisTap<T>& tx) {
  return {ty.hw * tx.hw, ty.hw * tx.lw, ty.lw * tx.hw, ty.lw * tx.lw};
}

// The range [first, last) of sample indices of bin p that can fall inside the
// map. For grids much finer than the map (huge boxes) this keeps the work
// bounded by the map's size, not the box's; axis_tap still decides exactly.
template <typename T>
FASTMASK_HOST_DEVICE void sample_range(T start, int64_t p, T bin, int64_t grid, int64_t size,
                                       int64_t& first, int64_t& last) {
  first = 0;
  last = grid;
  if (grid <= 2 * size + 8) return;
  const double origin = static_cast<double>(start) + static_cast<double>(p) * bin;
  const double step = static_cast<double>(bin) / static_cast<double>(grid);
  if (!(step > 0)) return;
  const double lo = floor((-1.0 - origin) / step - 0.5) - 2;
  const double hi = ceil((static_cast<double>(size) - origin) / step - 0.5) + 3;
  first = lo <= 0 ? 0 : (lo >= grid ? grid : static_cast<int64_t>(lo));
  last = hi <= 0 ? 0 : (hi >= grid ? grid : static_cast<int64_t>(hi));
}

}  // namespace fastmask
