// The RoIAlign ops of the `fastmask` library, written once over a backend and
// registered per dispatch key (CPU in roi_align.cpp, CUDA in roi_align_cuda_ops.cpp).
#pragma once

#include <torch/library.h>

#include "roi_align.h"

namespace fastmask {

// MakeBackend(deterministic) returns the kernels for one device.
template <RoIAlignBackend (*MakeBackend)(bool)>
struct RoIAlignOps {
  static at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                              bool aligned, bool /*deterministic: backward only*/) {
    const double scales[1] = {spatial_scale};
    return multi_level_roi_align_forward(MakeBackend(false), {input}, rois, c10::nullopt, scales,
                                         pooled_height, pooled_width, sampling_ratio, aligned);
  }

  static at::Tensor roi_align_backward(const at::Tensor& grad, const at::Tensor& rois,
                                       double spatial_scale, int64_t pooled_height,
                                       int64_t pooled_width, int64_t batch_size, int64_t channels,
                                       int64_t height, int64_t width, int64_t sampling_ratio,
                                       bool aligned, bool channels_last, bool deterministic) {
    const double scales[1] = {spatial_scale};
    const int64_t heights[1] = {height}, widths[1] = {width};
    return fastmask::multi_level_roi_align_backward(MakeBackend(deterministic), grad, rois, c10::nullopt,
                                          scales, heights, widths, batch_size, channels,
                                          pooled_height, pooled_width, sampling_ratio, aligned,
                                          channels_last)[0];
  }

  static at::Tensor multi_level_roi_align(at::TensorList features, const at::Tensor& rois,
                                          const at::Tensor& levels, at::ArrayRef<double> spatial_scales,
                                          int64_t pooled_height, int64_t pooled_width,
                                          int64_t sampling_ratio, bool aligned, bool /*deterministic*/) {
    return multi_level_roi_align_forward(MakeBackend(false), features, rois, levels, spatial_scales,
                                         pooled_height, pooled_width, sampling_ratio, aligned);
  }

  static std::vector<at::Tensor> multi_level_roi_align_backward(
      const at::Tensor& grad, const at::Tensor& rois, const at::Tensor& levels,
      at::ArrayRef<double> spatial_scales, at::IntArrayRef heights, at::IntArrayRef widths,
      int64_t batch_size, int64_t channels, int64_t pooled_height, int64_t pooled_width,
      int64_t sampling_ratio, bool aligned, bool channels_last, bool deterministic) {
    return fastmask::multi_level_roi_align_backward(
        MakeBackend(deterministic), grad, rois, levels, spatial_scales, heights, widths,
        batch_size, channels, pooled_height, pooled_width, sampling_ratio, aligned, channels_last);
  }

  static void register_impls(torch::Library& m) {
    m.impl("roi_align", &roi_align);
    m.impl("roi_align_backward", &roi_align_backward);
    m.impl("multi_level_roi_align", &multi_level_roi_align);
    m.impl("multi_level_roi_align_backward", &multi_level_roi_align_backward);
  }
};

}  // namespace fastmask
