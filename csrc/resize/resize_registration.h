// The resize ops of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in resize_cpu.cpp, CUDA in resize_cuda_ops.cpp).
#pragma once

#include "common/stable.h"
#include "resize.h"

namespace fastmask {

template <ResizeKernel Kernel>
struct ResizeOps {
  static Tensor resize_bilinear(const Tensor& input, int64_t out_height, int64_t out_width,
                                std::optional<double> scale_factor_h, std::optional<double> scale_factor_w) {
    return fastmask::resize_bilinear(Kernel, input, out_height, out_width, scale_factor_h, scale_factor_w);
  }

  static Tensor preprocess_images(const TensorList& images, const std::vector<int64_t>& sizes,
                                  const std::vector<double>& mean, const std::vector<double>& std_dev, int64_t height,
                                  int64_t width) {
    return fastmask::preprocess_images(Kernel, images, sizes, mean, std_dev, height, width);
  }

  static void register_impls(torch::stable::detail::StableLibrary& m) {
    m.impl("resize_bilinear", TORCH_BOX(&resize_bilinear));
    m.impl("preprocess_images", TORCH_BOX(&preprocess_images));
  }
};

}  // namespace fastmask
