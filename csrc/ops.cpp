// The `fastmask` operator library: every schema in one place. Backends add
// kernels with TORCH_LIBRARY_IMPL next to their code.
#include <torch/library.h>


TORCH_LIBRARY(fastmask, m) {
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
}
