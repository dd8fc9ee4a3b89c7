// Tensor-level entry points of the RPN ops (anchors, box coding, proposal
// generation), shared by the CPU and CUDA registrations: checks, allocation,
// the params handed to a backend's kernels.
#pragma once

#include <tuple>

#include "common/stable.h"
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
Tensor grid_anchors(const RpnBackend& backend, const TensorList& cell_anchors, IntArrayRef grid_sizes,
                    IntArrayRef strides, int64_t num_images);

// [N, 4C] boxes from [N, 4C] codes relative to [N, 4] boxes (BoxCoder.decode_single).
Tensor decode_boxes(const RpnBackend& backend, const Tensor& rel_codes, const Tensor& boxes, DoubleArrayRef weights,
                    double bbox_xform_clip);

// [N, 4] codes of `reference_boxes` relative to `proposals` (BoxCoder.encode_single).
Tensor encode_boxes(const RpnBackend& backend, const Tensor& reference_boxes, const Tensor& proposals,
                    DoubleArrayRef weights);

// boxes [B, P, 4], scores [B, P] (zero padded), counts [B]; P = post_nms_top_n.
std::tuple<Tensor, Tensor, Tensor> generate_proposals(const RpnBackend& backend, const TensorList& objectness,
                                                      const TensorList& deltas, const TensorList& cell_anchors,
                                                      IntArrayRef strides, const Tensor& image_sizes,
                                                      int64_t pre_nms_top_n, int64_t post_nms_top_n,
                                                      double nms_thresh, double score_thresh, double min_size,
                                                      DoubleArrayRef weights, double bbox_xform_clip);

}  // namespace fastmask
