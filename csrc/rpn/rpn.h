// Tensor-level entry points of the RPN ops (anchors, box coding, proposal
// generation), shared by the CPU and CUDA registrations: checks, allocation,
// the params handed to a backend's kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "nms/nms.h"
#include "rpn_params.h"

namespace fastmask {

struct RpnBackend {
  void (*grid_anchors)(const AnchorParams&) = nullptr;
  void (*decode)(const BoxCodingParams&) = nullptr;
  void (*encode)(const BoxCodingParams&) = nullptr;
  void (*propose)(const ProposalParams&) = nullptr;
  NmsKernel nms;
};

// [num_images, total, 4]: every level's anchors, in torchvision's order.
at::Tensor grid_anchors(const RpnBackend& backend, at::TensorList cell_anchors, at::IntArrayRef grid_sizes,
                        at::IntArrayRef strides, int64_t num_images);

// [N, 4C] boxes from [N, 4C] codes relative to [N, 4] boxes (BoxCoder.decode_single).
at::Tensor decode_boxes(const RpnBackend& backend, const at::Tensor& rel_codes, const at::Tensor& boxes,
                        at::ArrayRef<double> weights, double bbox_xform_clip);

// [N, 4] codes of `reference_boxes` relative to `proposals` (BoxCoder.encode_single).
at::Tensor encode_boxes(const RpnBackend& backend, const at::Tensor& reference_boxes, const at::Tensor& proposals,
                        at::ArrayRef<double> weights);

// boxes [B, P, 4], scores [B, P] (zero padded), counts [B]; P = post_nms_top_n.
std::tuple<at::Tensor, at::Tensor, at::Tensor> generate_proposals(
    const RpnBackend& backend, at::TensorList objectness, at::TensorList deltas, at::TensorList cell_anchors,
    at::IntArrayRef strides, const at::Tensor& image_sizes, int64_t pre_nms_top_n, int64_t post_nms_top_n,
    double nms_thresh, double score_thresh, double min_size, at::ArrayRef<double> weights, double bbox_xform_clip);

}  // namespace fastmask
