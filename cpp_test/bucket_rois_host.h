// fastmask::bucket_rois (csrc/roi_align/roi_align.h) for the libtorch test test_roi_align.cpp,
// whose ATen code cannot include the stable-ABI headers' build (bucket_rois_host.cpp is built
// with TORCH_TARGET_VERSION): plain arrays in, vectors out.
#pragma once

#include <cstdint>
#include <vector>

namespace fastmask_test {

// rois: [K, 5] contiguous, float64 when `float64` else float32; levels: [K] int64.
void bucket_rois_host(const void* rois, bool float64, int64_t num_rois, const int64_t* levels, int64_t batch_size,
                      int64_t num_levels, std::vector<int64_t>& order, std::vector<int64_t>& begin);

}  // namespace fastmask_test
