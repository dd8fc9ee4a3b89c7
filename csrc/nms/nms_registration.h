// The NMS ops of the `fastmask` library, written once over a backend kernel
// and registered per dispatch key (CPU in nms_cpu.cpp, CUDA in nms_cuda_ops.cpp).
#pragma once

#include "common/stable.h"
#include "nms.h"

namespace fastmask {

template <NmsKernel (*Kernel)()>
struct NmsOps {
  static Tensor nms(const Tensor& boxes, const Tensor& scores, double iou_threshold) {
    return single_image_nms(Kernel(), boxes, scores, std::nullopt, iou_threshold);
  }

  static Tensor batched_nms(const Tensor& boxes, const Tensor& scores, const Tensor& idxs, double iou_threshold) {
    return single_image_nms(Kernel(), boxes, scores, idxs, iou_threshold);
  }

  static std::tuple<Tensor, Tensor> multi_image_nms(const Tensor& boxes, const Tensor& scores,
                                                    std::optional<Tensor> idxs, std::optional<Tensor> valid,
                                                    double iou_threshold, int64_t max_output) {
    return fastmask::multi_image_nms(Kernel(), boxes, scores, idxs, valid, iou_threshold, max_output);
  }

  static void register_impls(torch::stable::detail::StableLibrary& m) {
    m.impl("nms", TORCH_BOX(&nms));
    m.impl("batched_nms", TORCH_BOX(&batched_nms));
    m.impl("multi_image_nms", TORCH_BOX(&multi_image_nms));
  }
};

}  // namespace fastmask
