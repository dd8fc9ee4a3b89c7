// Tensor-level NMS entry points shared by the CPU and CUDA registrations:
// checks, the per-image score sort, output allocation, and what is handed to a
// backend.
#pragma once

#include <functional>
#include <optional>
#include <tuple>

#include "common/stable.h"
#include "nms_params.h"

namespace fastmask {

// What multi_image_nms hands a backend: the checked inputs in descending score
// order per image (a stable sort: ties keep index order, as torchvision's), and
// `params` pointing at them and at the outputs. The tensors let a backend run
// ATen ops of its own on them (the CUDA one groups the candidates by class).
struct SortedNmsInputs {
  Tensor boxes;    // [B, N, 4], contiguous
  Tensor order;    // [B, N] int64: original index of each sorted box
  Tensor classes;  // [B, N] int64, or undefined: one class
  Tensor valid;    // [B, N] bool, or undefined: every box valid
  NmsParams params;
};

using NmsKernel = std::function<void(const SortedNmsInputs&)>;

std::tuple<Tensor, Tensor> multi_image_nms(const NmsKernel& kernel, const Tensor& boxes, const Tensor& scores,
                                           const std::optional<Tensor>& idxs, const std::optional<Tensor>& valid,
                                           double iou_threshold, int64_t max_output);

// One image: the kept indices, by decreasing score (one host sync for the count on CUDA).
Tensor single_image_nms(const NmsKernel& kernel, const Tensor& boxes, const Tensor& scores,
                        const std::optional<Tensor>& idxs, double iou_threshold);

}  // namespace fastmask
