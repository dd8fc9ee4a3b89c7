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
  // b in (-1, 0) truncates to image 0, which an empty batch does not have.
  const bool in_batch = batch_size > 0 && b > (T)-1 && b < static_cast<T>(batch_size);
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

// The sample at (exact) position y = start + (p + (i + 1/2) / grid) * bin is computed by
// sample_coordinate with rounding: (i + .5f) in float (even for double T: the int64 + float
// sum is float), then four operations in T. With u <= 2^-24 the unit roundoff of T, the
// computed value differs from y by at most
//   |fl(i + .5f) - (i + 1/2)| * |bin| / grid   <= 2^-23 |bin|          (two float roundings)
//   + the roundings of T(grid), p * bin, start + ., . * bin, . / grid and the final sum
//                                               <= 5u (|start| + (p + 1) |bin|)
//   <= 2^-21 (|start| + (p + 1) |bin|)          (ignoring u^2 terms; no overflow).
// sample_error doubles it, and adds 2^-20 for the double arithmetic of the callers (whose
// own rounding, relative 2^-52 of the same magnitudes, the doubling also covers).
template <typename T>
FASTMASK_HOST_DEVICE double sample_error(T start, int64_t p, T bin) {
  return 0x1p-20 * (1.0 + fabs(static_cast<double>(start)) +
                    static_cast<double>(p + 1) * fabs(static_cast<double>(bin)));
}

// The cells i in [0, count) of a row of cells [origin + i step, origin + (i + 1) step] (step of
// either sign) that meet [lo, hi]: [first, last). Computed in double, whose rounding (at most
// 2^-20 of a cell where it matters, i.e. for |i| <= 2^31) the 2^-10 cell of slack absorbs.
// A step of zero or not finite returns every cell.
FASTMASK_HOST_DEVICE void cells_meeting(double origin, double step, int64_t count, double lo, double hi,
                                        int64_t& first, int64_t& last) {
  first = 0;
  last = count;
  if (!(step != 0 && is_finite_value(step))) return;
  const double a = (lo - origin) / step, b = (hi - origin) / step;
  // Cell i meets [lo, hi] iff min(a, b) - 1 <= i <= max(a, b).
  const double from = ceil((a < b ? a : b) - 1 - 0x1p-10);
  const double to = floor((a < b ? b : a) + 0x1p-10) + 1;
  const double n = static_cast<double>(count);
  // Written so that NaN keeps every cell.
  first = from > 0 ? (from < n ? static_cast<int64_t>(from) : count) : 0;
  last = to < n ? (to > 0 ? static_cast<int64_t>(to) : 0) : count;
}

// The samples i in [first, last) of bin p whose computed coordinate can lie in [lo, hi]:
// sample i's exact position is in cell i of the bin's grid of cells, and the computed one
// within sample_error of it.
template <typename T>
FASTMASK_HOST_DEVICE void sample_span(T start, int64_t p, T bin, int64_t grid, double lo, double hi,
                                      int64_t& first, int64_t& last) {
  // An infinite bin (a finite box whose extent overflows T) makes every sample coordinate
  // +-inf or NaN: none lies in [lo, hi]. (cells_meeting would keep all of a 2^31 grid.)
  if (!is_finite_value(bin)) {
    first = last = 0;
    return;
  }
  const double error = sample_error(start, p, bin);
  cells_meeting(static_cast<double>(start) + static_cast<double>(p) * static_cast<double>(bin),
                static_cast<double>(bin) / static_cast<double>(grid), grid, lo - error, hi + error,
                first, last);
}

// The range [first, last) of sample indices of bin p that can fall inside the map, [-1, size]
// (axis_tap decides exactly). For grids much finer than the map (huge boxes) this keeps the
// work bounded by the map's size, not the box's; small grids are walked whole.
template <typename T>
FASTMASK_HOST_DEVICE void sample_range(T start, int64_t p, T bin, int64_t grid, int64_t size,
                                       int64_t& first, int64_t& last) {
  first = 0;
  last = grid;
  if (grid <= 2 * size + 8) return;
  sample_span(start, p, bin, grid, -1.0, static_cast<double>(size), first, last);
}

// Geometry of RoI k of a (multi-level) call. RoIs with a level outside [0, num_levels) or on
// an empty map (no pixel to read or write) are invalid: they pool zeros, get no gradient.
template <typename A>
FASTMASK_HOST_DEVICE RoIGeometry<A> level_roi_geometry(const RoIAlignParams& p, int64_t k, int64_t& level) {
  level = p.roi_levels ? p.roi_levels[k] : 0;
  if (level < 0 || level >= p.num_levels || p.levels[level].height <= 0 || p.levels[level].width <= 0) {
    RoIGeometry<A> g{};
    g.valid = false;
    g.batch = -1;
    return g;
  }
  return roi_geometry<A>(static_cast<const A*>(p.rois) + 5 * k, static_cast<A>(p.levels[level].spatial_scale),
                         p.pooled_height, p.pooled_width, p.sampling_ratio, p.aligned, p.batch_size);
}

}  // namespace fastmask
