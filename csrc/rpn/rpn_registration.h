// The RPN ops of the `fastmask` library, written once over a backend and
// registered per dispatch key (CPU in rpn_cpu.cpp, CUDA in rpn_cuda_ops.cpp).
#pragma once

#include <tuple>
#include <vector>

#include "common/stable.h"
#include "rpn.h"

namespace fastmask {

template <RpnBackend (*Backend)()>
struct RpnOps {
  static Tensor grid_anchors(const TensorList& cell_anchors, const std::vector<int64_t>& grid_sizes,
                             const std::vector<int64_t>& strides, int64_t num_images) {
    return fastmask::grid_anchors(Backend(), cell_anchors, grid_sizes, strides, num_images);
  }

  static Tensor decode_boxes(const Tensor& rel_codes, const Tensor& boxes, const std::vector<double>& weights,
                             double bbox_xform_clip) {
    return fastmask::decode_boxes(Backend(), rel_codes, boxes, weights, bbox_xform_clip);
  }

  static Tensor encode_boxes(const Tensor& reference_boxes, const Tensor& proposals,
                             const std::vector<double>& weights) {
    return fastmask::encode_boxes(Backend(), reference_boxes, proposals, weights);
  }

  static std::tuple<Tensor, Tensor, Tensor> generate_proposals(
      const TensorList& objectness, const TensorList& deltas, const TensorList& cell_anchors,
      const std::vector<int64_t>& strides, const Tensor& image_sizes, int64_t pre_nms_top_n, int64_t post_nms_top_n,
      double nms_thresh, double score_thresh, double min_size, const std::vector<double>& weights,
      double bbox_xform_clip) {
    return fastmask::generate_proposals(Backend(), objectness, deltas, cell_anchors, strides, image_sizes,
                                        pre_nms_top_n, post_nms_top_n, nms_thresh, score_thresh, min_size, weights,
                                        bbox_xform_clip);
  }

  static void register_impls(torch::stable::detail::StableLibrary& m) {
    m.impl("grid_anchors", TORCH_BOX(&grid_anchors));
    m.impl("decode_boxes", TORCH_BOX(&decode_boxes));
    m.impl("encode_boxes", TORCH_BOX(&encode_boxes));
    m.impl("generate_proposals", TORCH_BOX(&generate_proposals));
  }
};

}  // namespace fastmask
