#include "paste.h"

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "common/huge_pages.h"
#include "common/scalar_kind_aten.h"
#include "common/torch_cpu_arith.h"
#include "paste_cpu.h"
#include "paste_registration.h"

namespace fastmask {

at::Tensor paste_masks_in_image(PasteKernel kernel, const at::Tensor& masks, const at::Tensor& boxes, int64_t height,
                                int64_t width, int64_t padding, c10::optional<double> threshold) {
  TORCH_CHECK_VALUE(masks.dim() == 4 && masks.size(1) == 1,
                    "fastmask.paste_masks_in_image: masks must be a [N, 1, M, M] tensor, got shape ", masks.sizes());
  TORCH_CHECK_VALUE(masks.size(2) > 0 && masks.size(3) > 0,
                    "fastmask.paste_masks_in_image: masks must not be empty in M, got shape ", masks.sizes());
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4,
                    "fastmask.paste_masks_in_image: boxes must be a [N, 4] tensor (x1, y1, x2, y2), got shape ",
                    boxes.sizes());
  TORCH_CHECK_VALUE(boxes.size(0) == masks.size(0), "fastmask.paste_masks_in_image: ", masks.size(0),
                    " masks but ", boxes.size(0), " boxes; they must match one to one");
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()),
                   "fastmask.paste_masks_in_image: boxes must be floating point, got ", boxes.scalar_type());
  TORCH_CHECK_VALUE(boxes.device() == masks.device(), "fastmask.paste_masks_in_image: boxes are on ",
                    boxes.device(), " but masks are on ", masks.device());
  TORCH_CHECK_VALUE(height > 0 && width > 0, "fastmask.paste_masks_in_image: the image size (", height, ", ", width,
                    ") must be positive");
  // Bounded so that the padded mask's size cannot overflow.
  TORCH_CHECK_VALUE(padding >= 0 && padding <= 4096, "fastmask.paste_masks_in_image: padding must be in [0, 4096], got ",
                    padding);
  PasteParams p;
  p.dtype = scalar_kind(masks.scalar_type(), "fastmask.paste_masks_in_image: masks");
  const c10::OptionalDeviceGuard device_guard(masks.device());

  const int64_t N = masks.size(0);
  at::Tensor out = at::empty({N, 1, height, width}, masks.options().dtype(threshold ? at::kBool : masks.scalar_type()));
  if (N == 0) return out;

  // torchvision's expand_masks / expand_boxes, with its operations (in the box dtype), then
  // the cast to int64 (truncation toward zero) of paste_masks_in_image.
  const double scale = static_cast<double>(masks.size(3) + 2 * padding) / static_cast<double>(masks.size(3));
  const at::Tensor x0 = boxes.select(1, 0), y0 = boxes.select(1, 1), x1 = boxes.select(1, 2), y1 = boxes.select(1, 3);
  const at::Tensor w_half = (x1 - x0) * 0.5 * scale, h_half = (y1 - y0) * 0.5 * scale;
  const at::Tensor x_c = (x1 + x0) * 0.5, y_c = (y1 + y0) * 0.5;
  // A box with a non-finite coordinate pastes nothing. Others are clamped
  // to +-2^40 before the cast, which is undefined out of range (no image is that large); the
  // conversion to double is exact, so in range the result is torchvision's.
  constexpr double kFar = 1099511627776.0;
  const at::Tensor expanded = at::stack({x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half}, 1)
                                  .to(at::kDouble)
                                  .nan_to_num(0.0)
                                  .clamp(-kFar, kFar);
  // (A 1 x 1 box at -2^40 lies outside every image.)
  const at::Tensor int_boxes =
      at::where(at::isfinite(boxes).all(1, /*keepdim=*/true), expanded, -kFar).to(at::kLong).contiguous();
  const at::Tensor masks_c = masks.contiguous();

  p.masks = masks_c.const_data_ptr();
  p.num_masks = N, p.mask_height = masks.size(2), p.mask_width = masks.size(3);
  p.padding = padding;
  p.boxes = int_boxes.const_data_ptr<int64_t>();
  p.height = height, p.width = width;
  if (out.is_cpu()) advise_huge_pages(out.data_ptr(), out.nbytes());
  p.out = out.data_ptr();
  p.binary = threshold.has_value();
  p.threshold = threshold.value_or(0.0);
  p.torch_fused = torch_kernels_fused();
  kernel(p);
  return out;
}

TORCH_LIBRARY_IMPL(fastmask, CPU, m) { PasteOps<paste_masks_cpu>::register_impls(m); }

}  // namespace fastmask
