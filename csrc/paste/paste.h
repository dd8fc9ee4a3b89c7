// Tensor-level mask pasting shared by the CPU and CUDA registrations: checks,
// torchvision's box expansion, output allocation, the PasteParams handed to a
// backend kernel.
#pragma once

#include <optional>

#include "common/stable.h"
#include "paste_params.h"

namespace fastmask {

using PasteKernel = void (*)(const PasteParams&);

Tensor paste_masks_in_image(PasteKernel kernel, const Tensor& masks, const Tensor& boxes, int64_t height,
                            int64_t width, int64_t padding, std::optional<double> threshold);

}  // namespace fastmask
