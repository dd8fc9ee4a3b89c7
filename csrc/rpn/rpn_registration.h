// The RPN ops of the `fastmask` library, written once over a backend and
// registered per dispatch key (CPU in rpn.cpp, CUDA in rpn_cuda_ops.cpp).
#pragma once

#include <torch/library.h>

#include "rpn.h"

namespace fastmask {

template <RpnBackend (*Backend)()>
struct RpnOps {
  static at::Tensor grid_anchors(at::TensorList cell_anchors, at::IntArrayRef grid_sizes, at::IntArrayRef strides,
                                 int64_t num_images) {
    return fastmask::grid_anchors(Backend(), cell_anchors, grid_sizes, strides, num_images);
  }

  static at::Tensor decode_boxes(const at::Tensor& rel_codes, const at::Tensor& boxes, at::ArrayRef<double> weights,
                                 double bbox_xform_clip) {
    return fastmask::decode_boxes(Backend(), rel_codes, boxes, weights, bbox_xform_clip);
  }

  static at::Tensor encode_boxes(const at::Tensor& reference_boxes, const at::Tensor& proposals,
                                 at::ArrayRef<double> weights) {
    return fastmask::encode_boxes(Backend(), reference_boxes, proposals, weights);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> generate_proposals(
      at::TensorList objectness, at::TensorList deltas, at::TensorList cell_anchors, at::IntArrayRef strides,
      const at::Tensor& image_sizes, int64_t pre_nms_top_n, int64_t post_nms_top_n, double nms_thresh,
      double score_thresh, double min_size, at::ArrayRef<double> weights, double bbox_xform_clip) {
    return fastmask::generate_proposals(Backend(), objectness, deltas, cell_anchors, strides, image_sizes,
                                        pre_nms_top_n, post_nms_top_n, nms_thresh, score_thresh, min_size, weights,
                                        bbox_xform_clip);
  }

  static void register_impls(torch::Library& m) {
    m.impl("grid_anchors", &grid_anchors);
    m.impl("decode_boxes", &decode_boxes);
    m.impl("encode_boxes", &encode_boxes);
    m.impl("generate_proposals", &generate_proposals);
  }
};

}  // namespace fastmask
