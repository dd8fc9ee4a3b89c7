// The `fastmask` operator library: every schema in one place. Backends add
// kernels with STABLE_TORCH_LIBRARY_IMPL next to their code.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(fastmask, m) {
  // `deterministic` only selects the backward kernel (CUDA); it is an argument
  // of the forward op so that autograd can hand it to the backward.
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, bool deterministic=False) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
      "int sampling_ratio, bool aligned, bool channels_last, bool deterministic) -> Tensor");
  m.def(
      "multi_level_roi_align(Tensor[] features, Tensor rois, Tensor levels, float[] spatial_scales, "
      "int pooled_height, int pooled_width, int sampling_ratio, bool aligned, "
      "bool deterministic=False) -> Tensor");
  m.def(
      "multi_level_roi_align_backward(Tensor grad, Tensor rois, Tensor levels, "
      "float[] spatial_scales, SymInt[] heights, SymInt[] widths, SymInt batch_size, "
      "SymInt channels, int pooled_height, int pooled_width, int sampling_ratio, bool aligned, "
      "bool channels_last, bool deterministic) -> Tensor[]");

  // NMS. Kept indices by decreasing score; ties in score keep the lower index first.
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold) -> Tensor");
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
  // B images at once: keep [B, max_output] (-1 padded) and counts [B]; static shapes, no host sync.
  m.def(
      "multi_image_nms(Tensor boxes, Tensor scores, Tensor? idxs, Tensor? valid, float iou_threshold, "
      "int max_output) -> (Tensor keep, Tensor counts)");

  // RPN (anchors, box coding, proposals). Anchors, codes and proposals follow torchvision's
  // AnchorGenerator, BoxCoder and RegionProposalNetwork.filter_proposals.
  // Anchors of every level for num_images images: [num_images, total, 4]. grid_sizes and strides
  // hold (height, width) per level.
  m.def("grid_anchors(Tensor[] cell_anchors, SymInt[] grid_sizes, SymInt[] strides, SymInt num_images) -> Tensor");
  m.def("decode_boxes(Tensor rel_codes, Tensor boxes, float[] weights, float bbox_xform_clip) -> Tensor");
  m.def("encode_boxes(Tensor reference_boxes, Tensor proposals, float[] weights) -> Tensor");
  // Per image and level top-k, decode, clip, size and score filters, level-aware NMS, top-N, for
  // the whole batch: boxes [B, post_nms_top_n, 4] and scores [B, post_nms_top_n], zero padded
  // after counts[b]; static shapes, no host sync.
  m.def(
      "generate_proposals(Tensor[] objectness, Tensor[] pred_bbox_deltas, Tensor[] cell_anchors, "
      "SymInt[] strides, Tensor image_sizes, int pre_nms_top_n, int post_nms_top_n, float nms_thresh, "
      "float score_thresh, float min_size, float[] weights, float bbox_xform_clip) "
      "-> (Tensor boxes, Tensor scores, Tensor counts)");

  // Bilinear resize: image preprocessing and mask pasting.
  // F.interpolate(mode="bilinear", align_corners=False) to (out_height, out_width); the scale
  // factors as F.interpolate hands them to its kernel (absent: in / out).
  m.def(
      "resize_bilinear(Tensor input, int out_height, int out_width, float? scale_factor_h=None, "
      "float? scale_factor_w=None) -> Tensor");
  // GeneralizedRCNNTransform's images: normalise, resize image i to (sizes[2i], sizes[2i+1]),
  // zero-pad into [B, C, height, width]. uint8 images [H, W, C] (scaled by 1/255), float [C, H, W].
  m.def(
      "preprocess_images(Tensor[] images, int[] sizes, float[] mean, float[] std, int height, "
      "int width) -> Tensor");
  // torchvision's paste_masks_in_image: masks [N, 1, M, M] into [N, 1, height, width]; with a
  // threshold, the bool mask (value > threshold) instead.
  m.def(
      "paste_masks_in_image(Tensor masks, Tensor boxes, int height, int width, int padding=1, "
      "float? threshold=None) -> Tensor");
}
