// Tensor-level RoIAlign entry points shared by the CPU and CUDA registrations:
// argument checks, layout and dtype normalisation, output allocation, and the
// RoIAlignParams handed to a backend's kernel.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "common/stable.h"
#include "roi_align_params.h"

namespace fastmask {

using RoIAlignKernel = std::function<void(const RoIAlignParams&)>;

struct RoIAlignBackend {
  RoIAlignKernel forward;
  RoIAlignKernel backward;
  // CPU checks batch and level indices up front and raises; the CUDA path
  // cannot without a host sync, so its kernels write zeros for such RoIs.
  bool check_indices = false;
  // Kernels that accumulate the feature gradient channels_last whatever the
  // features' layout (the result is converted back at the end).
  bool channels_last_gradient = false;
  // Backward kernels that walk the RoIs by (level, image): the binding fills
  // RoIAlignParams::roi_order / bucket_begin (bucket_rois).
  bool bucket_rois = false;
};

// RoI indices grouped by (level, image), as RoIAlignParams::roi_order / bucket_begin
// describe, from the RoIs in the accumulation type (as the kernels read them) and the
// optional [K] levels: a stable sort of the RoIs' bucket keys, then a searchsorted of the bucket
// boundaries in the sorted keys (not a counting pass). Sync-free ATen ops on the RoIs' device.
struct RoIBuckets {
  Tensor order;  // [K] int64
  Tensor begin;  // [num_levels * batch_size + 1] int64
};
RoIBuckets bucket_rois(const Tensor& rois_acc, const std::optional<Tensor>& levels, int64_t batch_size,
                       int64_t num_levels);

Tensor multi_level_roi_align_forward(const RoIAlignBackend& backend, const TensorList& features, const Tensor& rois,
                                     const std::optional<Tensor>& levels, DoubleArrayRef spatial_scales,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                     bool aligned);

std::vector<Tensor> multi_level_roi_align_backward(const RoIAlignBackend& backend, const Tensor& grad,
                                                   const Tensor& rois, const std::optional<Tensor>& levels,
                                                   DoubleArrayRef spatial_scales, IntArrayRef heights,
                                                   IntArrayRef widths, int64_t batch_size, int64_t channels,
                                                   int64_t pooled_height, int64_t pooled_width,
                                                   int64_t sampling_ratio, bool aligned, bool channels_last);

}  // namespace fastmask
