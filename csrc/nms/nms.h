// Tensor-level NMS entry points shared by the CPU and CUDA registrations:
// checks, the per-image score sort, output allocation, the NmsParams handed
// to a backend kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <tuple>

#include "nms_params.h"

namespace fastmask {

using NmsKernel = std::function<void(const NmsParams&)>;

std::tuple<at::Tensor, at::Tensor> multi_image_nms(const NmsKernel& kernel, const at::Tensor& boxes,
                                                   const at::Tensor& scores,
                                                   const c10::optional<at::Tensor>& idxs,
                                                   const c10::optional<at::Tensor>& valid,
                                                   double iou_threshold, int64_t max_output);

// One image: the kept indices, by decreasing score (one host sync for the count on CUDA).
at::Tensor single_image_nms(const NmsKernel& kernel, const at::Tensor& boxes, const at::Tensor& scores,
                            const c10::optional<at::Tensor>& idxs, double iou_threshold);

}  // namespace fastmask
