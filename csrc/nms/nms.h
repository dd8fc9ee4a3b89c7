// Tensor-level NMS entry points shared by the CPU and CUDA registrations:
// checks, the per-image score sort, output allocation, and what is handed to a
// backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <tuple>

#include "nms_params.h"

namespace fastmask {

// What multi_image_nms hands a backend: the checked inputs in descending score
// order per image (a stable sort: ties keep index order, as torchvision's), and
// `params` pointing at them and at the outputs. The tensors let a backend run
// ATen ops of its own on them (the CUDA one groups the candidates by class).
struct SortedNmsInputs {
  at::Tensor boxes;    // [B, N, 4], contiguous
  at::Tensor order;    // [B, N] int64: original index of each sorted box
  at::Tensor classes;  // [B, N] int64, or undefined: one class
  at::Tensor valid;    // [B, N] bool, or undefined: every box valid
  NmsParams params;
};

using NmsKernel = std::function<void(const SortedNmsInputs&)>;

std::tuple<at::Tensor, at::Tensor> multi_image_nms(const NmsKernel& kernel, const at::Tensor& boxes,
                                                   const at::Tensor& scores,
                                                   const c10::optional<at::Tensor>& idxs,
                                                   const c10::optional<at::Tensor>& valid,
                                                   double iou_threshold, int64_t max_output);

// One image: the kept indices, by decreasing score (one host sync for the count on CUDA).
at::Tensor single_image_nms(const NmsKernel& kernel, const at::Tensor& boxes, const at::Tensor& scores,
                            const c10::optional<at::Tensor>& idxs, double iou_threshold);

}  // namespace fastmask
