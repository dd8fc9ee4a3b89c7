// NMS of quantized boxes and scores (QuantizedCPU), with torchvision's quantized semantics: the
// IoU is computed in float32 from the raw integers (the scale cancels in the IoU, the zero point
// in every coordinate difference) and the boxes are visited by decreasing raw score.
//
// That is exactly the float32 NMS of the raw integers: a raw coordinate is exact in float32 up
// to 2^24, so every difference is exact and each area and intersection is rounded once, as
// torchvision rounds its integer areas and float32 intersections. Scores go as float64, which
// orders every int32 exactly.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace fastmask {
namespace {

at::Tensor nms_quantized(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  TORCH_CHECK_TYPE(boxes.is_quantized() && boxes.qscheme() == at::kPerTensorAffine,
                   "fastmask.nms: quantized boxes must be quantized per tensor (affine)");
  TORCH_CHECK_TYPE(scores.is_quantized() && scores.qscheme() == at::kPerTensorAffine,
                   "fastmask.nms: if boxes are quantized, scores must also be quantized (per tensor), got ",
                   scores.scalar_type());
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastmask::nms", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double)>();
  return op.call(boxes.int_repr().to(at::kFloat), scores.int_repr().to(at::kDouble), iou_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastmask, QuantizedCPU, m) { m.impl("nms", &nms_quantized); }

}  // namespace fastmask
