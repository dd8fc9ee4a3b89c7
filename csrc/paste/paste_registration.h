// The paste op of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in paste.cpp, CUDA in paste_cuda_ops.cpp).
#pragma once

#include <torch/library.h>

#include "paste.h"

namespace fastmask {

template <PasteKernel Kernel>
struct PasteOps {
  static at::Tensor paste_masks_in_image(const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                                         int64_t width, int64_t padding, c10::optional<double> threshold) {
    return fastmask::paste_masks_in_image(Kernel, masks, boxes, height, width, padding, threshold);
  }

  static void register_impls(torch::Library& m) { m.impl("paste_masks_in_image", &paste_masks_in_image); }
};

}  // namespace fastmask
