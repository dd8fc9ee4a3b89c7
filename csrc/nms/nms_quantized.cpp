// NMS of quantized boxes and scores (QuantizedCPU), with torchvision's quantized semantics: the
// IoU is computed in float32 from the raw integers (the scale cancels in the IoU, the zero point
// in every coordinate difference) and the boxes are visited by decreasing raw score.
//
// That is exactly the float32 NMS of the raw integers: a raw coordinate is exact in float32 up
// to 2^24, so every difference is exact and each area and intersection is rounded once, as
// torchvision rounds its integer areas and float32 intersections. Scores go as float64, which
// orders every int32 exactly.
#include <exception>

#include "common/stable_aten.h"

namespace fastmask {
namespace {

// ATen's Tensor::is_quantized() && qscheme() == kPerTensorAffine. The stable ABI has neither; a
// tensor is quantized exactly when its dtype is a quantized one, and aten::q_scale accepts only
// per-tensor affine quantized tensors (it raises for every other scheme).
bool is_per_tensor_affine(const Tensor& t) {
  if (!is_quantized(t)) return false;
  try {
    (void)aten::q_scale(t);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

Tensor nms_quantized(const Tensor& boxes, const Tensor& scores, double iou_threshold) {
  FASTMASK_CHECK_TYPE(is_per_tensor_affine(boxes),
                      "fastmask.nms: quantized boxes must be quantized per tensor (affine)");
  FASTMASK_CHECK_TYPE(is_per_tensor_affine(scores),
                      "fastmask.nms: if boxes are quantized, scores must also be quantized (per tensor), got ",
                      dtype_name(scores));
  // fastmask::nms through the dispatcher: the float kernels of the boxes' device (CPU).
  return aten::tensor_op("fastmask::nms", "", aten::to(aten::int_repr(boxes), ScalarType::Float),
                         aten::to(aten::int_repr(scores), ScalarType::Double), iou_threshold);
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(fastmask, QuantizedCPU, m) { m.impl("nms", TORCH_BOX(&nms_quantized)); }

}  // namespace fastmask
