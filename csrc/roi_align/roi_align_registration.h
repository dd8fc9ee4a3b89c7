// The RoIAlign ops of the `fastmask` library, written once over a backend and
// registered per dispatch key (CPU in roi_align.cpp, CUDA in roi_align_cuda_ops.cpp).
#pragma once

#include "common/stable.h"
#include "roi_align.h"

namespace fastmask {

// MakeBackend(deterministic) returns the kernels for one device.
template <RoIAlignBackend (*MakeBackend)(bool)>
struct RoIAlignOps {
  static Tensor roi_align(const Tensor& input, const Tensor& rois, double spatial_scale, int64_t pooled_height,
                          int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                          bool /*deterministic: backward only*/) {
    const double scales[1] = {spatial_scale};
    return multi_level_roi_align_forward(MakeBackend(false), {input}, rois, std::nullopt, scales, pooled_height,
                                         pooled_width, sampling_ratio, aligned);
  }

  static Tensor roi_align_backward(const Tensor& grad, const Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t batch_size,
                                   int64_t channels, int64_t height, int64_t width, int64_t sampling_ratio,
                                   bool aligned, bool channels_last, bool deterministic) {
    const double scales[1] = {spatial_scale};
    const int64_t heights[1] = {height}, widths[1] = {width};
    return fastmask::multi_level_roi_align_backward(MakeBackend(deterministic), grad, rois, std::nullopt, scales,
                                                    heights, widths, batch_size, channels, pooled_height,
                                                    pooled_width, sampling_ratio, aligned, channels_last)[0];
  }

  static Tensor multi_level_roi_align(const TensorList& features, const Tensor& rois, const Tensor& levels,
                                      const std::vector<double>& spatial_scales, int64_t pooled_height,
                                      int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                      bool /*deterministic*/) {
    return multi_level_roi_align_forward(MakeBackend(false), features, rois, levels, spatial_scales, pooled_height,
                                         pooled_width, sampling_ratio, aligned);
  }

  static std::vector<Tensor> multi_level_roi_align_backward(
      const Tensor& grad, const Tensor& rois, const Tensor& levels, const std::vector<double>& spatial_scales,
      const std::vector<int64_t>& heights, const std::vector<int64_t>& widths, int64_t batch_size, int64_t channels,
      int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned, bool channels_last,
      bool deterministic) {
    return fastmask::multi_level_roi_align_backward(MakeBackend(deterministic), grad, rois, levels, spatial_scales,
                                                    heights, widths, batch_size, channels, pooled_height,
                                                    pooled_width, sampling_ratio, aligned, channels_last);
  }

  static void register_impls(torch::stable::detail::StableLibrary& m) {
    m.impl("roi_align", TORCH_BOX(&roi_align));
    m.impl("roi_align_backward", TORCH_BOX(&roi_align_backward));
    m.impl("multi_level_roi_align", TORCH_BOX(&multi_level_roi_align));
    m.impl("multi_level_roi_align_backward", TORCH_BOX(&multi_level_roi_align_backward));
  }
};

}  // namespace fastmask
