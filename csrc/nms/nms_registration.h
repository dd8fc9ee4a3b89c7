// The NMS ops of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in nms.cpp, CUDA in nms_cuda_ops.cpp).
#pragma once

#include <torch/library.h>

#include "nms.h"

namespace fastmask {

template <NmsKernel (*Kernel)()>
struct NmsOps {
  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
    return single_image_nms(Kernel(), boxes, scores, c10::nullopt, iou_threshold);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double iou_threshold) {
    return single_image_nms(Kernel(), boxes, scores, idxs, iou_threshold);
  }

  static std::tuple<at::Tensor, at::Tensor> multi_image_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                                            const c10::optional<at::Tensor>& idxs,
                                                            const c10::optional<at::Tensor>& valid,
                                                            double iou_threshold, int64_t max_output) {
    return fastmask::multi_image_nms(Kernel(), boxes, scores, idxs, valid, iou_threshold, max_output);
  }

  static void register_impls(torch::Library& m) {
    m.impl("nms", &nms);
    m.impl("batched_nms", &batched_nms);
    m.impl("multi_image_nms", &multi_image_nms);
  }
};

}  // namespace fastmask
