#include "nms.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common/scalar_kind_aten.h"
#include "nms_cpu.h"
#include "nms_registration.h"

namespace fastmask {
std::tuple<at::Tensor, at::Tensor> multi_image_nms(const NmsKernel& kernel, const at::Tensor& boxes,
                                                   const at::Tensor& scores,
                                                   const c10::optional<at::Tensor>& idxs,
                                                   const c10::optional<at::Tensor>& valid,
                                                   double iou_threshold, int64_t max_output) {
  TORCH_CHECK_VALUE(boxes.dim() == 3 && boxes.size(2) == 4,
                    "fastmask.multi_image_nms: boxes must be a [B, N, 4] tensor (x1, y1, x2, y2), got shape ",
                    boxes.sizes());
  const int64_t B = boxes.size(0), N = boxes.size(1);
  TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == B && scores.size(1) == N,
                    "fastmask.multi_image_nms: scores must have shape [B, N] = [", B, ", ", N, "], got ",
                    scores.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()),
                   "fastmask.multi_image_nms: scores must be floating point, got ", scores.scalar_type());
  TORCH_CHECK_VALUE(scores.device() == boxes.device(), "fastmask.multi_image_nms: scores is on ",
                    scores.device(), " but boxes is on ", boxes.device());
  if (idxs) {
    TORCH_CHECK_VALUE(idxs->sizes() == scores.sizes(),
                      "fastmask.multi_image_nms: idxs must have shape [B, N] = [", B, ", ", N, "], got ",
                      idxs->sizes());
    TORCH_CHECK_TYPE(!at::isFloatingType(idxs->scalar_type()) && !at::isComplexType(idxs->scalar_type()) &&
                         idxs->scalar_type() != at::kBool,
                     "fastmask.multi_image_nms: idxs must be an integer tensor (class or level ids), got ",
                     idxs->scalar_type());
    TORCH_CHECK_VALUE(idxs->device() == boxes.device(), "fastmask.multi_image_nms: idxs is on ",
                      idxs->device(), " but boxes is on ", boxes.device());
  }
  if (valid) {
    TORCH_CHECK_TYPE(valid->scalar_type() == at::kBool,
                     "fastmask.multi_image_nms: valid must be a bool tensor, got ", valid->scalar_type());
    TORCH_CHECK_VALUE(valid->sizes() == scores.sizes(), "fastmask.multi_image_nms: valid must have shape [B, N] = [",
                      B, ", ", N, "], got ", valid->sizes());
    TORCH_CHECK_VALUE(valid->device() == boxes.device(), "fastmask.multi_image_nms: valid is on ",
                      valid->device(), " but boxes is on ", boxes.device());
  }
  TORCH_CHECK_VALUE(max_output >= 0, "fastmask.multi_image_nms: max_output must be >= 0, got ", max_output);
  const c10::OptionalDeviceGuard device_guard(boxes.device());

  const ScalarKind dtype = scalar_kind(boxes.scalar_type(), "fastmask.nms: boxes");
  at::Tensor keep = at::empty({B, max_output}, boxes.options().dtype(at::kLong));
  at::Tensor counts = at::empty({B}, boxes.options().dtype(at::kLong));
  if (B == 0) return {keep, counts};
  if (N == 0 || max_output == 0) return {keep.fill_(-1), counts.zero_()};

  // Descending score order per image; stable, as torchvision's sort (ties: lower index first).
  SortedNmsInputs in;
  in.order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true)).contiguous();
  in.boxes = boxes.gather(1, in.order.unsqueeze(2).expand({B, N, 4})).contiguous();
  if (idxs) in.classes = idxs->to(at::kLong).gather(1, in.order).contiguous();
  if (valid) in.valid = valid->gather(1, in.order).contiguous();

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
  p.keep = keep.data_ptr<int64_t>();
  p.counts = counts.data_ptr<int64_t>();
  kernel(in);
  return {keep, counts};
}

at::Tensor single_image_nms(const NmsKernel& kernel, const at::Tensor& boxes, const at::Tensor& scores,
                            const c10::optional<at::Tensor>& idxs, double iou_threshold) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                    "fastmask.nms: boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape ", boxes.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == boxes.size(0),
                    "fastmask.nms: scores must be a [N] tensor with N = ", boxes.size(0), ", got shape ",
                    scores.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()), "fastmask.nms: scores must be floating point, got ",
                   scores.scalar_type());
  if (idxs) {
    TORCH_CHECK_VALUE(idxs->dim() == 1 && idxs->size(0) == boxes.size(0),
                      "fastmask.batched_nms: idxs must be a [N] tensor with N = ", boxes.size(0),
                      ", got shape ", idxs->sizes());
  }
  const int64_t N = boxes.size(0);
  auto [keep, counts] =
      multi_image_nms(kernel, boxes.unsqueeze(0), scores.unsqueeze(0),
                      idxs ? c10::optional<at::Tensor>(idxs->unsqueeze(0)) : c10::nullopt, c10::nullopt,
                      iou_threshold, N);
  const int64_t count = N == 0 ? 0 : counts.item<int64_t>();  // the one host sync of plain nms
  return keep.select(0, 0).narrow(0, 0, count);
}

namespace {
NmsKernel cpu_nms_kernel() { return multi_image_nms_cpu; }
}  // namespace

TORCH_LIBRARY_IMPL(fastmask, CPU, m) { NmsOps<cpu_nms_kernel>::register_impls(m); }

}  // namespace fastmask
