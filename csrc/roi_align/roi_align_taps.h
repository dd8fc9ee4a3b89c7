// Host-side tap lists of the CPU RoIAlign kernels (float and quantized): every sample of every
// bin along one axis that falls on the map, bin by bin.
#pragma once

#include <cstdint>
#include <vector>

#include "roi_align_geometry.h"

namespace fastmask {

// Taps of bin p are taps[begin[p] .. begin[p + 1]); samples off the map weigh nothing.
template <typename A>
void axis_taps(A start, A bin, int64_t grid, int64_t pooled, int64_t size,
               std::vector<AxisTap<A>>& taps, std::vector<int32_t>& begin) {
  taps.clear();
  begin.assign(pooled + 1, 0);
  for (int64_t p = 0; p < pooled; ++p) {
    begin[p] = static_cast<int32_t>(taps.size());
    int64_t first, last;
    sample_range(start, p, bin, grid, size, first, last);
    for (int64_t i = first; i < last; ++i) {
      AxisTap<A> tap;
      if (axis_tap(sample_coordinate(start, p, bin, i, grid), size, tap)) taps.push_back(tap);
    }
  }
  begin[pooled] = static_cast<int32_t>(taps.size());
}

}  // namespace fastmask
