#include "nms.h"

#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {
namespace {

// ATen's isComplexType.
bool is_complex(ScalarType t) {
  return t == ScalarType::ComplexHalf || t == ScalarType::ComplexFloat || t == ScalarType::ComplexDouble ||
         t == ScalarType::BComplex32;
}

}  // namespace

std::tuple<Tensor, Tensor> multi_image_nms(const NmsKernel& kernel, const Tensor& boxes, const Tensor& scores,
                                           const std::optional<Tensor>& idxs, const std::optional<Tensor>& valid,
                                           double iou_threshold, int64_t max_output) {
  FASTMASK_CHECK_VALUE(boxes.dim() == 3 && boxes.size(2) == 4,
                       "fastmask.multi_image_nms: boxes must be a [B, N, 4] tensor (x1, y1, x2, y2), got shape ",
                       shape(boxes));
  const int64_t B = boxes.size(0), N = boxes.size(1);
  FASTMASK_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == B && scores.size(1) == N,
                       "fastmask.multi_image_nms: scores must have shape [B, N] = [", B, ", ", N, "], got ",
                       shape(scores));
  FASTMASK_CHECK_TYPE(is_floating(scores.scalar_type()),
                      "fastmask.multi_image_nms: scores must be floating point, got ", scores.scalar_type());
  FASTMASK_CHECK_VALUE(scores.device() == boxes.device(), "fastmask.multi_image_nms: scores is on ", scores.device(),
                       " but boxes is on ", boxes.device());
  if (idxs) {
    FASTMASK_CHECK_VALUE(idxs->sizes() == scores.sizes(), "fastmask.multi_image_nms: idxs must have shape [B, N] = [",
                         B, ", ", N, "], got ", shape(*idxs));
    FASTMASK_CHECK_TYPE(!is_floating(idxs->scalar_type()) && !is_complex(idxs->scalar_type()) &&
                            idxs->scalar_type() != ScalarType::Bool,
                        "fastmask.multi_image_nms: idxs must be an integer tensor (class or level ids), got ",
                        idxs->scalar_type());
    FASTMASK_CHECK_VALUE(idxs->device() == boxes.device(), "fastmask.multi_image_nms: idxs is on ", idxs->device(),
                         " but boxes is on ", boxes.device());
  }
  if (valid) {
    FASTMASK_CHECK_TYPE(valid->scalar_type() == ScalarType::Bool,
                        "fastmask.multi_image_nms: valid must be a bool tensor, got ", valid->scalar_type());
    FASTMASK_CHECK_VALUE(valid->sizes() == scores.sizes(),
                         "fastmask.multi_image_nms: valid must have shape [B, N] = [", B, ", ", N, "], got ",
                         shape(*valid));
    FASTMASK_CHECK_VALUE(valid->device() == boxes.device(), "fastmask.multi_image_nms: valid is on ",
                         valid->device(), " but boxes is on ", boxes.device());
  }
  FASTMASK_CHECK_VALUE(max_output >= 0, "fastmask.multi_image_nms: max_output must be >= 0, got ", max_output);
  const DeviceScope device_scope(boxes);

  const ScalarKind dtype = scalar_kind(boxes.scalar_type(), "fastmask.nms: boxes");
  Tensor keep = aten::empty({B, max_output}, ScalarType::Long, boxes.device());
  Tensor counts = aten::empty({B}, ScalarType::Long, boxes.device());
  if (B == 0) return {keep, counts};
  if (N == 0 || max_output == 0) {
    torch::stable::fill_(keep, -1.0);
    torch::stable::zero_(counts);
    return {keep, counts};
  }

  // Descending score order per image; stable, as torchvision's sort (ties: lower index first).
  SortedNmsInputs in;
  in.order = aten::contiguous(aten::sort(scores, /*dim=*/1, /*descending=*/true).second);
  in.boxes = aten::contiguous(aten::gather(boxes, 1, aten::expand(aten::unsqueeze(in.order, 2), {B, N, 4})));
  if (idxs) in.classes = aten::contiguous(aten::gather(aten::to(*idxs, ScalarType::Long), 1, in.order));
  if (valid) in.valid = aten::contiguous(aten::gather(*valid, 1, in.order));

  NmsParams& p = in.params;
  p.dtype = dtype;
  p.num_images = B;
  p.num_boxes = N;
  p.boxes = in.boxes.const_data_ptr();
  p.order = in.order.const_data_ptr<int64_t>();
  p.classes = idxs ? in.classes.const_data_ptr<int64_t>() : nullptr;
  p.valid = valid ? in.valid.const_data_ptr<bool>() : nullptr;
  p.iou_threshold = iou_threshold;
  p.max_output = max_output;
  p.keep = keep.mutable_data_ptr<int64_t>();
  p.counts = counts.mutable_data_ptr<int64_t>();
  kernel(in);
  return {keep, counts};
}

Tensor single_image_nms(const NmsKernel& kernel, const Tensor& boxes, const Tensor& scores,
                        const std::optional<Tensor>& idxs, double iou_threshold) {
  FASTMASK_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                       "fastmask.nms: boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape ", shape(boxes));
  FASTMASK_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0),
                       "fastmask.nms: scores must be a [N] tensor with N = ", boxes.size(0), ", got shape ",
                       shape(scores));
  FASTMASK_CHECK_TYPE(is_floating(scores.scalar_type()), "fastmask.nms: scores must be floating point, got ",
                      scores.scalar_type());
  if (idxs) {
    FASTMASK_CHECK_VALUE(idxs->dim() == 1 && idxs->size(0) == boxes.size(0),
                         "fastmask.batched_nms: idxs must be a [N] tensor with N = ", boxes.size(0), ", got shape ",
                         shape(*idxs));
  }
  const int64_t N = boxes.size(0);
  auto [keep, counts] = multi_image_nms(kernel, aten::unsqueeze(boxes, 0), aten::unsqueeze(scores, 0),
                                        idxs ? std::optional<Tensor>(aten::unsqueeze(*idxs, 0)) : std::nullopt,
                                        std::nullopt, iou_threshold, N);
  int64_t count = 0;
  if (N != 0) {  // the one host sync of plain nms
    const Tensor host = aten::to(counts, Device(DeviceType::CPU));
    count = *host.const_data_ptr<int64_t>();
  }
  return aten::narrow(aten::select(keep, 0, 0), 0, 0, count);
}

}  // namespace fastmask
