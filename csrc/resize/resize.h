// Tensor-level bilinear resize entry points shared by the CPU and CUDA
// registrations: checks, output allocation, the ResizeParams handed to a
// backend kernel.
#pragma once

#include <optional>

#include "common/stable.h"
#include "resize_params.h"

namespace fastmask {

// Resizes `count` independent jobs (the images of one preprocessing call) in one call.
using ResizeKernel = void (*)(const ResizeParams* jobs, int64_t count);

// F.interpolate(input, size=(out_height, out_width), mode="bilinear", align_corners=False),
// with its scale factors when it got them (<= 0 or absent: in / out). Output in the input's
// memory format.
Tensor resize_bilinear(ResizeKernel kernel, const Tensor& input, int64_t out_height, int64_t out_width,
                       std::optional<double> scale_factor_h, std::optional<double> scale_factor_w);

// torchvision's GeneralizedRCNNTransform image path in one pass per image: normalise,
// resize to sizes[2i], sizes[2i+1], write into a zero-padded [B, C, height, width] batch.
// uint8 images are [H, W, C] and scaled by 1/255 first; floating images are [C, H, W].
Tensor preprocess_images(ResizeKernel kernel, const TensorList& images, IntArrayRef sizes, DoubleArrayRef mean,
                         DoubleArrayRef std_dev, int64_t height, int64_t width);

}  // namespace fastmask
