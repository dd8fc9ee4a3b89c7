// The resize ops of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in resize.cpp, CUDA in resize_cuda_ops.cpp).
#pragma once

#include <torch/library.h>

#include "resize.h"

namespace fastmask {

template <ResizeKernel Kernel>
struct ResizeOps {
  static at::Tensor resize_bilinear(const at::Tensor& input, int64_t out_height, int64_t out_width,
                                    c10::optional<double> scale_factor_h, c10::optional<double> scale_factor_w) {
    return fastmask::resize_bilinear(Kernel, input, out_height, out_width, scale_factor_h, scale_factor_w);
  }

  static at::Tensor preprocess_images(at::TensorList images, at::IntArrayRef sizes, at::ArrayRef<double> mean,
                                      at::ArrayRef<double> std_dev, int64_t height, int64_t width) {
    return fastmask::preprocess_images(Kernel, images, sizes, mean, std_dev, height, width);
  }

  static void register_impls(torch::Library& m) {
    m.impl("resize_bilinear", &resize_bilinear);
    m.impl("preprocess_images", &preprocess_images);
  }
};

}  // namespace fastmask
