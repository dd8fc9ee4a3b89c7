// The paste op of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in paste_cpu.cpp, CUDA in paste_cuda_ops.cpp).
#pragma once

#include "common/stable.h"
#include "paste.h"

namespace fastmask {

template <PasteKernel Kernel>
struct PasteOps {
  static Tensor paste_masks_in_image(const Tensor& masks, const Tensor& boxes, int64_t height, int64_t width,
                                     int64_t padding, std::optional<double> threshold) {
    return fastmask::paste_masks_in_image(Kernel, masks, boxes, height, width, padding, threshold);
  }

  static void register_impls(torch::stable::detail::StableLibrary& m) {
    m.impl("paste_masks_in_image", TORCH_BOX(&paste_masks_in_image));
  }
};

}  // namespace fastmask
