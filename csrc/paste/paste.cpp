#include "paste.h"

#include "common/huge_pages.h"
#include "common/scalar_kind_torch.h"
#include "common/stable_aten.h"

namespace fastmask {

Tensor paste_masks_in_image(PasteKernel kernel, const Tensor& masks, const Tensor& boxes, int64_t height,
                            int64_t width, int64_t padding, std::optional<double> threshold) {
  FASTMASK_CHECK_VALUE(masks.dim() == 4 && masks.size(1) == 1,
                       "fastmask.paste_masks_in_image: masks must be a [N, 1, M, M] tensor, got shape ", shape(masks));
  FASTMASK_CHECK_VALUE(masks.size(2) > 0 && masks.size(3) > 0,
                       "fastmask.paste_masks_in_image: masks must not be empty in M, got shape ", shape(masks));
  FASTMASK_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                       "fastmask.paste_masks_in_image: boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape ",
                       shape(boxes));
  FASTMASK_CHECK_VALUE(boxes.size(0) == masks.size(0), "fastmask.paste_masks_in_image: ", masks.size(0),
                       " masks but ", boxes.size(0), " boxes; they must match one to one");
  FASTMASK_CHECK_TYPE(is_floating(boxes.scalar_type()),
                      "fastmask.paste_masks_in_image: boxes must be floating point, got ", boxes.scalar_type());
  FASTMASK_CHECK_VALUE(boxes.device() == masks.device(), "fastmask.paste_masks_in_image: boxes are on ",
                       boxes.device(), " but masks are on ", masks.device());
  FASTMASK_CHECK_VALUE(height > 0 && width > 0, "fastmask.paste_masks_in_image: the image size (", height, ", ",
                       width, ") must be positive");
  // Bounded so that the padded mask's size cannot overflow.
  FASTMASK_CHECK_VALUE(padding >= 0 && padding <= 4096,
                       "fastmask.paste_masks_in_image: padding must be in [0, 4096], got ", padding);
  PasteParams p;
  p.dtype = scalar_kind(masks.scalar_type(), "fastmask.paste_masks_in_image: masks");
  const DeviceScope device_scope(masks);

  const int64_t N = masks.size(0);
  Tensor out = aten::empty({N, 1, height, width}, threshold ? ScalarType::Bool : masks.scalar_type(), masks.device());
  if (N == 0) return out;

  // torchvision's expand_masks / expand_boxes, with its operations (in the box dtype; the
  // Python numbers as 0-dim CPU tensors, which ATen reads as it reads Python numbers), then
  // the cast to int64 (truncation toward zero) of paste_masks_in_image.
  using aten::scalar;
  const Device device = boxes.device();
  const Tensor half = scalar(0.5, ScalarType::Double);
  const Tensor scale = scalar(static_cast<double>(masks.size(3) + 2 * padding) / static_cast<double>(masks.size(3)),
                              ScalarType::Double);
  const Tensor x0 = aten::select(boxes, 1, 0), y0 = aten::select(boxes, 1, 1);
  const Tensor x1 = aten::select(boxes, 1, 2), y1 = aten::select(boxes, 1, 3);
  const Tensor w_half = aten::mul(aten::mul(aten::sub(x1, x0), half), scale);
  const Tensor h_half = aten::mul(aten::mul(aten::sub(y1, y0), half), scale);
  const Tensor x_c = aten::mul(aten::add(x1, x0), half), y_c = aten::mul(aten::add(y1, y0), half);
  // A box with a non-finite coordinate pastes nothing. Others are clamped
  // to +-2^40 before the cast, which is undefined out of range (no image is that large); the
  // conversion to double is exact, so in range the result is torchvision's.
  constexpr double kFar = 1099511627776.0;
  const Tensor far = scalar(kFar, ScalarType::Double, device), near = scalar(-kFar, ScalarType::Double, device);
  const Tensor expanded = aten::clamp(
      aten::nan_to_num(aten::to(aten::stack({aten::sub(x_c, w_half), aten::sub(y_c, h_half), aten::add(x_c, w_half),
                                             aten::add(y_c, h_half)},
                                            1),
                                ScalarType::Double),
                       0.0),
      near, far);
  // (A 1 x 1 box at -2^40 lies outside every image.)
  const Tensor int_boxes = aten::contiguous(
      aten::to(aten::where(aten::all(aten::isfinite(boxes), 1, /*keepdim=*/true), expanded, near), ScalarType::Long));
  const Tensor masks_c = aten::contiguous(masks);

  p.masks = masks_c.const_data_ptr();
  p.num_masks = N, p.mask_height = masks.size(2), p.mask_width = masks.size(3);
  p.padding = padding;
  p.boxes = static_cast<const int64_t*>(int_boxes.const_data_ptr());
  p.height = height, p.width = width;
  p.out = out.mutable_data_ptr();
  if (out.is_cpu()) advise_huge_pages(p.out, nbytes(out));
  p.binary = threshold.has_value();
  p.threshold = threshold.value_or(0.0);
  kernel(p);
  return out;
}

}  // namespace fastmask
